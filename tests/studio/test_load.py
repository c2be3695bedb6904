"""A small version of tests/studio/load_test.py in the test suite: concurrent mixed requests
match their sequential answers and leave the weights bit-identical."""
from __future__ import annotations

import pytest
from load_test import run

pytestmark = pytest.mark.load


def test_concurrent_mixed_requests_match_sequential_answers_and_keep_weights():
    report = run(requests=6, parallel=6, app_concurrency=3)
    assert report["succeeded"] == report["requests_sent"] == 6, report["errors"]
    assert report["mismatches_vs_sequential"] == 0
    assert not report["weights_hash_changed"] and not report["patched_after"]
