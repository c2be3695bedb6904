"""Command-line tools (`tflow-train`, `tflow-pretrain`, `tflow-evaluate`, `tflow-bench`, `tflow-convert-release`)
and the helpers only they use: flag builders, the checkpoint catalog, model shapes, memory estimates, statistics.
Importing the package asks torch's CPU allocator for huge pages (`tflow.allocator`) before any tool loads torch."""
from ..allocator import prefer_huge_pages

prefer_huge_pages()  # before any tool imports torch (its allocator reads the setting once)
