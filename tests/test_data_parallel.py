"""data_parallel.launch_once: several workers in one launch, the cached ones run only once."""
from normtext.experiments import data_parallel

HELLO = ("normtext.distributed.workers:hello", (), {})


def test_launch_once_runs_missing_cached_calls_and_reuses_them(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMTEXT_CACHE", str(tmp_path))
    first = data_parallel.launch_once(2, {"every time": HELLO},
                                      {"once": ({"what": "hello"}, *HELLO)}, timeout=300)
    # uncached calls: one result per rank; cached calls: rank 0's
    assert [r["rank"] for r in first["every time"]] == [0, 1]
    assert first["once"]["rank"] == 0 and first["once"]["sum_of_ranks"] == 1.0
    assert len(list(tmp_path.glob("once-*.json"))) == 1
    # the second time the cached call is not run again: its pid is the first run's
    second = data_parallel.launch_once(2, {"every time": HELLO},
                                       {"once": ({"what": "hello"}, *HELLO)}, timeout=300)
    assert second["once"]["pid"] == first["once"]["pid"]
    assert second["every time"][0]["pid"] != first["every time"][0]["pid"]


def test_launch_once_with_everything_cached_starts_no_process(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMTEXT_CACHE", str(tmp_path))
    data_parallel.launch_once(2, {}, {"once": ({"what": "hello"}, *HELLO)}, timeout=300)

    def no_launch(*args, **kwargs):
        raise AssertionError("launched although every call was cached")

    monkeypatch.setattr(data_parallel, "launch", no_launch)
    again = data_parallel.launch_once(2, {}, {"once": ({"what": "hello"}, *HELLO)})
    assert again["once"]["rank"] == 0
