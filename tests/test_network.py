"""The network: shapes for every variant and chunk size, and the reference's initialisation."""
import pytest
import torch

from model.network import DeepEmoCluster, conv_output_size


@pytest.mark.parametrize("m, expected", [(62, (2, 4)), (16, (1, 4)), (8, (1, 4)), (100, (4, 4)), (125, (4, 4))])
def test_conv_output_size(m, expected):
    assert conv_output_size(m) == expected
    net = DeepEmoCluster("none", 5, m, 1, 1, width=0.25)
    assert net.encoder.conv(torch.zeros(1, 1, m, 128)).shape[2:] == expected


@pytest.mark.parametrize("temporal", ["none", "gru", "cnn", "transformer", "triplet"])
def test_every_variant_maps_chunks_to_heads(temporal):
    torch.manual_seed(0)
    net = DeepEmoCluster(temporal, num_clusters=7, chunk_frames=20, chunks_per_sentence=4, num_attributes=3, width=0.25)
    out = net(torch.randn(8, 1, 20, 128))
    assert out.embedding.shape == (8, 256) and out.features.shape == (8, 256)
    assert out.logits.shape == (8, 7) and out.attributes.shape == (8, 3)
    out.logits.sum().backward()
    assert net.encoder.conv[0].weight.grad is not None


def test_temporal_module_mixes_chunks_of_one_sentence_only():
    torch.manual_seed(0)
    net = DeepEmoCluster("gru", 4, 16, 3, 1, width=0.25).eval()
    x = torch.randn(6, 1, 16, 128)
    base = net(x).attributes
    x2 = x.clone()
    x2[4] += 1.0  # a chunk of the second sentence
    changed = net(x2).attributes
    assert torch.allclose(base[:3], changed[:3])
    assert not torch.allclose(base[3:], changed[3:])


def test_reference_initialisation_and_top_layer_reset():
    net = DeepEmoCluster("none", 10, 62, 11, 1)
    assert torch.all(net.encoder.conv[1].weight == 1) and torch.all(net.top_layer.bias == 0)
    assert abs(net.top_layer.weight.std().item() - 0.01) < 0.002
    before = net.top_layer.weight.clone()
    torch.manual_seed(1)
    net.reset_top_layer()
    assert not torch.equal(before, net.top_layer.weight)


@pytest.mark.parametrize("channels_last", [False, True])
def test_inference_copy_folds_batchnorm_and_matches_eval_mode(channels_last):
    from model.network import inference_copy

    torch.manual_seed(0)
    net = DeepEmoCluster("gru", 4, 20, 4, 3, width=0.25)
    if channels_last:
        net.encoder.conv.to(memory_format=torch.channels_last)
    with torch.no_grad():  # training-mode passes give the BatchNorm layers non-trivial running statistics
        for _ in range(3):
            net(torch.randn(16, 1, 20, 128) * 2 + 1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded = inference_copy(net)
    assert net.training and not folded.training  # the original keeps its mode
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.encoder.modules())
    x = torch.randn(8, 1, 20, 128)
    with torch.no_grad():
        expected, got = net.eval()(x), folded(x)
    for a, b in zip(expected, got):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # weights untouched
