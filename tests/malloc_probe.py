"""Page faults per 200 MB tensor, allocated and freed in a loop by the calling thread, once warm.

Source text, run in a fresh process (the allocator setting is per process): 48,829 faults per block
when glibc maps it afresh (4 KB pages). The count is the whole process's (getrusage RUSAGE_SELF):
torch's own threads fill the tensor too. The median of 8 blocks: a kept heap still grows now and then
in its first rounds (a block faulted in after 12 warm-up rounds, in about 1 of 5 runs)."""

BLOCK_FAULTS = '''
def block_faults():
    import resource
    import statistics
    import torch

    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(12):     # glibc's heap reaches its steady state after a few rounds
        torch.ones(50_000_000).sum()
    counts = []
    for _ in range(8):
        before = faults()
        torch.ones(50_000_000).sum()
        counts.append(faults() - before)
    return int(statistics.median(counts))
'''
