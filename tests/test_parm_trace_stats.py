"""scripts/parm_trace_stats.py on hand-written traces."""
import json

import pytest

from scripts.parm_trace_stats import main, parm_stats


def write_trace(folder, prompt, records):
    path = folder / f"{prompt:05d}" / "trace" / "0000.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_counts_clear_steps_stops_and_fallbacks(tmp_path):
    write_trace(tmp_path, 0, [{"candidate": 0, "clear_step": 2, "prune_step": 2, "chosen": False, "fallback": False},
                              {"candidate": 1, "clear_step": 4, "prune_step": None, "chosen": True, "fallback": False}])
    write_trace(tmp_path, 1, [{"candidate": 0, "clear_step": None, "prune_step": 3, "chosen": False, "fallback": False},
                              {"candidate": 1, "clear_step": 3, "prune_step": 3, "chosen": True, "fallback": True}])
    stats = parm_stats(tmp_path)
    assert stats == {"images": 2, "paths": 4, "mean_clear_step": 3, "stopped_share": 0.75, "fallback_images": 1}


def test_a_folder_without_traces_is_named(tmp_path):
    with pytest.raises(ValueError, match="no trace files"):
        parm_stats(tmp_path)


def test_saved_decisions_give_the_same_figures(tmp_path):
    run = tmp_path / "run"
    write_trace(run, 0, [{"candidate": 0, "clear_step": 2, "prune_step": 2, "chosen": False, "fallback": False},
                         {"candidate": 1, "clear_step": None, "prune_step": None, "chosen": True, "fallback": False}])
    write_trace(run, 1, [{"candidate": 0, "clear_step": 5, "prune_step": 5, "chosen": True, "fallback": True},
                         {"candidate": 1, "clear_step": 3, "prune_step": 3, "chosen": False, "fallback": False}])
    saved = tmp_path / "decisions.json"
    main([str(run), "--save", str(saved)])
    assert parm_stats(saved) == parm_stats(run) == {"images": 2, "paths": 4, "mean_clear_step": 10 / 3,
                                                    "stopped_share": 0.75, "fallback_images": 1}
