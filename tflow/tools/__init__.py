"""Command-line tools (`tflow-train`, `tflow-pretrain`, `tflow-evaluate`, `tflow-bench`, `tflow-convert-release`)
and the helpers only they use: flag builders, the checkpoint catalog, model shapes, memory estimates, statistics."""
from ..allocator import prefer_huge_pages

prefer_huge_pages()  # before any tool imports torch (its allocator reads the setting once)
