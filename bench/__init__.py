"""carehub's benchmarks: `carehub bench ingest|latency|live|dashboard`, outside the product.

They drive a hub (a child process, or in this process for the dashboard) with load and
print their figures. They import the hub; nothing in the hub imports them: the `bench`
command reaches `carehub` through the `carehub.commands` entry-point group.
"""
