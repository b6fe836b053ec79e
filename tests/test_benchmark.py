"""The benchmark and ablation commands: every requested setting measured with every field, values that agree
with the session and the evaluator run directly, FLOPs of the paths in the right order, aggregation on
hand-made results, resuming from the partial-results file, and the CLI on synthetic clips and the shared
blackswan clip. Weights are random (masks after the first frame mean nothing); no assert is about speed.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import cli
from reusevos.bench.ablation import PARTIAL_FILE, _same_at_tau_one, ablation_settings, run_ablation
from reusevos.bench.figures import figure_lines
from reusevos.bench.measure import SequenceResult, count_flops
from reusevos.bench.report import _add_references, format_header, format_stage_table, format_table, summarise
from reusevos.bench.run import quick_sequences, run_benchmark
from reusevos.bench.settings import Setting, build_settings, parse_setting, select_settings
from reusevos.io.davis import load_sequence
from reusevos.provenance import machine_label
from reusevos.runner import FRAME_KINDS
from reusevos.session import SUB_STAGES, Stage
from reusevos.config import ModelConfig, SessionConfig, offline_config
from reusevos.errors import ReusevosError
from reusevos.evaluation import score_sequence
from reusevos.io.davis import DavisDataset
from reusevos.model.network import VOSNetwork, load_model, save_checkpoint
from reusevos.session import Session
from reusevos.synthetic import SyntheticConfig, write_clip

ORACLE_TAU = 0.8  # on clip "one" (speed 1) the oracle alternates reused and computed frames at this tau
SETTINGS = (["full", "reuse", "copy", "fusion", "oracle"], [1.0, ORACLE_TAU, 0.0], [0.9])


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    """Two 6-frame 64x96 clips in the DAVIS 2017 layout, split val: one object, and two objects."""
    root = tmp_path_factory.mktemp("davis")
    write_clip(root, "one", SyntheticConfig(size=(64, 96), num_frames=6, num_objects=1, seed=0, speed=1.0),
               split="val")
    write_clip(root, "two", SyntheticConfig(size=(64, 96), num_frames=6, num_objects=2, seed=1, speed=1.0),
               split="val")
    return root


@pytest.fixture(scope="module")
def gate_weights(tmp_path_factory, backbone) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "gate.pt"
    save_checkpoint(path, VOSNetwork(ModelConfig(reuse_gate=True), backbone), meta={"name": "random-gate"})
    return path


@pytest.fixture(scope="module")
def network(gate_weights):
    return load_model(gate_weights)


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def report(network, synthetic_root, one_thread) -> dict:
    settings, skipped = build_settings(*SETTINGS, has_gate=True)
    return run_benchmark(network, DavisDataset(synthetic_root, "val"), settings, skipped=skipped, command="test")


def _by_key(report: dict) -> dict[str, dict]:
    return {s["setting"]: s for s in report["settings"]}


def test_settings_grid_runs_full_once_and_skips_what_cannot_run():
    settings, skipped = build_settings(["full", "reuse", "fusion"], [1.0, 0.7, 0.95], [0.9])
    assert [s.key for s in settings] == ["full", "reuse@1", "reuse@0.7", "reuse@0.95", "fusion@0.7/0.9"]
    assert {s["setting"] for s in skipped} == {"fusion@1/0.9", "fusion@0.95/0.9"}
    assert all("tau < tau2" in s["reason"] for s in skipped)
    settings, skipped = build_settings(["full", "reuse"], [0.7], has_gate=False)
    assert [s.key for s in settings] == ["full"] and skipped[0]["reason"] == "the weights have no reuse gate"
    assert settings[0].options() == SessionConfig("full", 1.0, compute_window=0)
    with pytest.raises(ReusevosError, match="unknown variant"):
        build_settings(["warp"], [0.5])
    with pytest.raises(ReusevosError, match=r"\[0, 1\]"):
        build_settings(["reuse"], [1.5])
    settings, _ = build_settings(["full", "reuse", "copy"], [1.0, 0.7], windows=[0, 2])
    # copy has no reuse path, and at tau = 1 nothing reuses: a window changes nothing there
    assert [s.key for s in settings] == ["full", "reuse@1", "reuse@0.7", "reuse@0.7+w2", "copy@1", "copy@0.7"]
    assert settings[3].options() == SessionConfig("reuse", 0.7, reuse_window=2, compute_window=0)
    with pytest.raises(ReusevosError, match="whole numbers of cells"):
        build_settings(["reuse"], [0.7], windows=[-1])
    settings, _ = build_settings(["full", "reuse"], [0.7], windows=[0, 2], compute_windows=[0, 3])
    # a computed-frame window applies to every variant, full included
    assert [s.key for s in settings] == ["full", "full+c3", "reuse@0.7", "reuse@0.7+w2", "reuse@0.7+c3",
                                         "reuse@0.7+w2+c3"]
    assert settings[5].options() == SessionConfig("reuse", 0.7, reuse_window=2, compute_window=3, search_margin=0)
    with pytest.raises(ReusevosError, match="compute windows must be whole numbers"):
        build_settings(["full"], [0.7], compute_windows=[-2])
    settings, _ = build_settings(["full", "reuse"], [0.7], compute_windows=[0, 2], runtimes=["torch", "onnxruntime"])
    # the backbone's runtime is the innermost choice, so each setting sits next to its twin
    assert [s.key for s in settings] == ["full+torch", "full+ort", "full+c2+torch", "full+c2+ort", "reuse@0.7+torch",
                                         "reuse@0.7+ort", "reuse@0.7+c2+torch", "reuse@0.7+c2+ort"]
    assert settings[1].runtime == "onnxruntime" and settings[1].options() == SessionConfig("full", 1.0, compute_window=0)
    with pytest.raises(ReusevosError, match="unknown backbone runtime 'tvm'"):
        build_settings(["full"], [0.7], runtimes=["tvm"])
    # auto is the model's own choice: the same setting as naming no runtime
    assert [s.key for s in build_settings(["full"], [1.0], runtimes=["auto", None, "torch"])[0]] == ["full", "full+torch"]
    with pytest.raises(ReusevosError, match="give at least one variant"):
        build_settings([], [0.7])


def test_openvino_settings_are_named_and_read_back(monkeypatch):
    from reusevos.model import onnx_backbone

    # named whether or not this machine has OpenVINO or a CPU with bfloat16
    monkeypatch.setattr(onnx_backbone, "openvino_available", lambda: True)
    monkeypatch.setattr(onnx_backbone, "openvino_cpu", lambda: ("a CPU with bfloat16", ("BF16", "FP32")))
    settings, _ = build_settings(["full", "reuse"], [0.7], compute_windows=[2],
                                 runtimes=["onnxruntime", "openvino", "openvino-bf16"])
    assert [s.key for s in settings] == ["full+c2+ort", "full+c2+ov", "full+c2+ovbf16", "reuse@0.7+c2+ort",
                                         "reuse@0.7+c2+ov", "reuse@0.7+c2+ovbf16"]
    assert [s.runtime for s in settings[:3]] == ["onnxruntime", "openvino", "openvino-bf16"]
    assert all(parse_setting(s.key) == s for s in settings)
    monkeypatch.setattr(onnx_backbone, "openvino_cpu", lambda: ("Old CPU", ("FP32",)))
    with pytest.raises(ReusevosError, match=r"this one \(Old CPU\) does not"):
        parse_setting("full+c2+ovbf16")


def test_setting_names_read_back():
    grid, _ = build_settings(["full", "reuse", "copy", "fusion", "oracle"], [1.0, 0.7, 0.25], [0.9], windows=[0, 2],
                             compute_windows=[0, 3], runtimes=[None, "torch", "onnxruntime"])
    assert len(grid) > 50 and all(parse_setting(s.key) == s for s in grid)  # every name the tables print
    settings, skipped = select_settings(["reuse@0.7+w2+c2+ort", "full+torch", "full+torch", "copy@0.5"])
    assert [s.key for s in settings] == ["reuse@0.7+w2+c2+ort", "full+torch", "copy@0.5"] and not skipped  # in order
    assert settings[0] == Setting("reuse", 0.7, None, 2, 2, "onnxruntime")
    settings, skipped = select_settings(["full+c2", "reuse@0.7"], has_gate=False)
    assert [s.key for s in settings] == ["full+c2"] and skipped[0]["reason"] == "the weights have no reuse gate"
    for bad, message in [("reuse", "give the variant's tau"), ("full@0.5", "takes no tau"),
                         ("warp@0.5", "unknown variant 'warp'"), ("reuse@1.5", r"\[0, 1\]"),
                         ("fusion@0.9/0.5", "tau < tau2"), ("copy@0.5+w2", "reuse_window applies"),
                         ("reuse@0.7+x3", "not a setting name"), ("reuse@0.7.1", "tau must be a number"),
                         ("full+tvm", "not a setting name")]:
        with pytest.raises(ReusevosError, match=message):
            parse_setting(bad)
    with pytest.raises(ReusevosError, match="at least one setting"):
        select_settings([])


def test_the_grid_runs_flow_with_and_without_the_lookahead():
    settings, _ = build_settings(["full", "flow", "reuse"], [1.0, 0.85], compute_windows=[2], lookaheads=[True, False])
    assert [s.key for s in settings] == ["full+c2", "flow@1+c2", "flow@0.85+g2+la+c2", "flow@0.85+g2+c2", "reuse@1+c2",
                                         "reuse@0.85+c2"]  # tau 1 never moves: no lookahead to speak of
    assert settings[2].options() == SessionConfig("flow", 0.85, compute_window=2, lookahead=True, search_margin=0)
    with pytest.raises(ReusevosError, match="on or off"):
        build_settings(["flow"], [0.85], lookaheads=[])
    settings, _ = build_settings(["flow", "reuse"], [0.85], lookaheads=[True], memory_clocks=["frames", "computed"])
    assert [s.key for s in settings] == ["flow@0.85+g2+la+mf", "flow@0.85+g2+la", "reuse@0.85"]  # the paper's: FRTM's
    with pytest.raises(ReusevosError, match="memory_clock must be"):
        build_settings(["flow"], [0.85], memory_clocks=["seconds"])


def test_flow_lines_are_drawn_per_longest_gap():
    def summary(key):
        setting = parse_setting(key)
        return {"setting": key, "variant": setting.variant, "tau": setting.tau, "compute_window": 2,
                "flow_max_gap": setting.flow_max_gap}

    report = {"settings": [summary(k) for k in ("full+c2", "flow@0.9+c2", "flow@0.8+g2+c2", "flow@0.92+c2",
                                                  "flow@0.92+g2+c2")]}
    assert [(label, [p["setting"] for p in points]) for _, label, points in figure_lines(report)] == [
        ("full, compute window 2", ["full+c2"]), ("flow, compute window 2", ["flow@0.92+c2", "flow@0.9+c2"]),
        ("flow, compute window 2, longest gap 2", ["flow@0.92+g2+c2", "flow@0.8+g2+c2"])]
    del report["settings"][1]["flow_max_gap"]  # a report from before the option: its flow settings are gap 12
    assert len(figure_lines(report)) == 3
    # the memory clock is a line of its own too
    clocks = {"settings": [{**summary(k), "lookahead": True, "memory_clock": clock} for k, clock in
                           (("flow@0.85+g2+la+c2", "computed"), ("flow@0.85+g2+la+mf+c2", "frames"),
                            ("flow@0.7+g2+la+mf+c2", "frames"))]}
    assert [(label, [p["setting"] for p in points]) for _, label, points in figure_lines(clocks)] == [
        ("flow, compute window 2, longest gap 2, lookahead", ["flow@0.85+g2+la+c2"]),
        ("flow, compute window 2, longest gap 2, lookahead, memory clock in frames",
         ["flow@0.85+g2+la+mf+c2", "flow@0.7+g2+la+mf+c2"])]


def test_flow_settings_name_their_longest_gap_unless_it_is_the_limit():
    grid, _ = build_settings(["full", "flow"], [1.0, 0.9], compute_windows=[2], flow_max_gaps=[3, 12])
    assert [s.key for s in grid] == ["full+c2", "flow@1+c2", "flow@0.9+g3+c2", "flow@0.9+c2"]
    assert all(parse_setting(s.key) == s for s in grid)
    assert [s.options().flow_max_gap for s in grid] == [None, 12, 3, 12]
    assert parse_setting("flow@0.9+c2").options().flow_max_gap == 12  # a name keeps its meaning
    # without flow_max_gaps (as the ablation calls it) flow runs at the session's default longest gap
    assert [s.options().flow_max_gap for s in build_settings(["flow"], [0.9])[0]] == [SessionConfig().flow_max_gap]
    for bad, message in [("flow@0.9+g13", "from 1 to 12"), ("flow@0.9+g0", "from 1 to 12"),
                         ("full+g2+c2", "applies to the gated variants")]:
        with pytest.raises(ReusevosError, match=message):
            parse_setting(bad)
    with pytest.raises(ReusevosError, match="at least one longest gap"):
        build_settings(["flow"], [0.9], flow_max_gaps=[])


def test_gated_settings_name_their_longest_gap_unless_it_is_none():
    grid, _ = build_settings(["full", "reuse", "copy", "flow"], [1.0, 0.7], windows=[2], compute_windows=[2],
                             reuse_max_gaps=[0, 2])
    assert [s.key for s in grid] == ["full+c2", "reuse@1+c2", "reuse@0.7+w2+c2", "reuse@0.7+w2+g2+c2", "copy@1+c2",
                                     "copy@0.7+c2", "copy@0.7+g2+c2", "flow@1+c2", "flow@0.7+g2+c2"]
    assert all(parse_setting(s.key) == s for s in grid)
    assert [s.options().reuse_max_gap for s in grid] == [0, 0, 0, 2, 0, 0, 2, 0, 0]
    # +gN is the flow variant's flow_max_gap and the gated variants' reuse_max_gap
    assert parse_setting("flow@0.7+g2+c2").options().flow_max_gap == 2
    assert parse_setting("reuse@0.7+g3").options() == SessionConfig("reuse", 0.7, reuse_max_gap=3, compute_window=0)
    with pytest.raises(ReusevosError, match="reuse_max_gap must be"):
        build_settings(["reuse"], [0.7], reuse_max_gaps=[-1])
    with pytest.raises(ReusevosError, match="at least one longest gap for the gated"):
        build_settings(["reuse"], [0.7], reuse_max_gaps=[])
    summaries = [{"setting": s.key, "variant": s.variant, "tau": s.tau, "compute_window": 2,
                  "reuse_window": s.window, "reuse_max_gap": s.reuse_max_gap} for s in grid if s.variant == "reuse"]
    assert [label for _, label, _ in figure_lines({"settings": summaries})] == [
        "reuse, compute window 2", "reuse, reuse window 2, compute window 2",
        "reuse, reuse window 2, compute window 2, longest gap 2"]


def test_report_has_every_setting_with_every_field(report):
    settings = _by_key(report)
    expected, skipped = build_settings(*SETTINGS)
    assert list(settings) == [s.key for s in expected]
    assert [s["setting"] for s in report["skipped"]] == [s["setting"] for s in skipped] == ["fusion@1/0.9"]
    for key, s in settings.items():
        assert s["sequences"] == 2 and s["frames"] == 12 and s["objects"] == 3
        assert s["fps"] > 0 and s["fps_excl_init"] > 0 and s["init_s_per_object"] > 0
        assert s["time_s"] == pytest.approx(12 / s["fps"], rel=1e-3)
        for name in ("J&F", "J", "F"):
            assert 0.0 <= s[name] <= 1.0
        assert s["J&F"] == pytest.approx((s["J"] + s["F"]) / 2, abs=1e-4)
        assert 0.0 <= s["reuse_rate"] <= 1.0
        assert s["peak_rss_mb"] > 0 and s["rss_increase_mb"] >= 0
        assert sum(s["frame_kinds"].values()) == 12 and s["frame_kinds"]["start"] == 2
        assert sum(s["object_frames"].values()) == 3 * 5  # every object tracked on frames 1..5
        assert 0.0 <= s["computation_saved"] < 1.0 and s["gflops_per_frame"] > 0
        assert len(s["per_sequence"]) == 2
        for row in s["per_sequence"]:  # each sequence's own J, F and J-Decay (where a decay comes from)
            assert row["J&F"] == pytest.approx((row["J"] + row["F"]) / 2, abs=1e-4) and -1 <= row["J-Decay"] <= 1
        stages = s["stages_s"]
        assert stages["mask_encoding"] > 0 and stages["initialisation"] == pytest.approx(s["init_s"], abs=1e-4)
        # The top-level stages (initialisation among them) and the rest add up to the timed wall time.
        children = {c.value for cs in SUB_STAGES.values() for c in cs}
        top = sum(stages[k.value] for k in Stage if k.value not in children) + stages["other"]
        assert top == pytest.approx(s["time_s"], abs=2e-3)
        for parent, parts in SUB_STAGES.items():
            assert sum(stages[c.value] for c in parts) <= stages[parent.value] + 2e-3
        if s["variant"] != "copy":  # copied frames skip the refinement network
            assert stages["refine_level8"] > 0 and stages["refine_level4"] > 0
    assert report["threads"] == 1 and report["torch"] == torch.__version__ and report["command"] == "test"
    assert report["machine"]["cpu_model"] and report["commit"]
    assert report["dataset"]["resolutions"] == {"one": [64, 96], "two": [64, 96]}
    assert "VmRSS" in report["memory"]
    json.dumps(report)  # serialisable as it stands


def test_reuse_rates_and_paths_follow_the_settings(report):
    s = _by_key(report)
    for key in ("full", "reuse@1", "copy@1", "oracle@1"):
        assert s[key]["reuse_rate"] == 0.0 and s[key]["computation_saved"] == 0.0
        assert s[key]["frame_kinds"]["reused"] == s[key]["frame_kinds"]["copied"] == 0
    for key in ("reuse@0", "copy@0", "fusion@0/0.9", "oracle@0"):  # every P >= 0: every frame reused
        assert s[key]["reuse_rate"] == 1.0 and s[key]["object_frames"]["computed"] == 0
    assert s["reuse@0"]["object_frames"]["reused"] == 15
    assert s["copy@0"]["object_frames"]["copied"] == 15
    # Every setting of one run shares one reference: speed-ups are over full, from the same run.
    assert all(v["speedup_reference"] == "full" for k, v in s.items() if k != "full")
    assert s["full"]["speedup"] is None
    # Without computed frames of its own, c compares with the same variant at tau = 1.
    assert s["reuse@0"]["c"] > 0 and s["reuse@0"]["c_reference"] == "reuse@1"
    assert s["copy@0"]["c"] > 0 and s["copy@0"]["c_reference"] == "copy@1"
    assert s["full"]["c"] is None  # nothing is reused


def test_c_from_the_same_setting_when_both_kinds_of_frame_exist(report, synthetic_root):
    dataset = DavisDataset(synthetic_root, "val")
    gt = dataset.read_masks("one") == 1
    last, plan = 0, []
    for t in range(1, len(gt)):
        iou = (gt[t] & gt[last]).sum() / (gt[t] | gt[last]).sum()
        plan.append(iou >= ORACLE_TAU)
        last = last if plan[-1] else t
    assert any(plan) and not all(plan)  # the clip has both kinds of frame at this tau
    oracle = _by_key(report)[f"oracle@{ORACLE_TAU:g}"]
    assert oracle["frame_kinds"]["reused"] > 0 and oracle["frame_kinds"]["computed"] > 0
    assert oracle["c_reference"] == oracle["setting"]
    assert oracle["c"] == pytest.approx(oracle["frame_ms"]["reused"] / oracle["frame_ms"]["computed"], rel=1e-3)
    assert 0 < oracle["reuse_rate"] < 1


def test_scores_and_reuse_match_the_session_and_the_evaluator_run_directly(report, network, synthetic_root,
                                                                         one_thread):
    dataset = DavisDataset(synthetic_root, "val")
    for key, options in (("full", SessionConfig("full", 1.0, compute_window=0)),
                         ("oracle@0.8", SessionConfig("oracle", 0.8, compute_window=0))):
        objects, rates = [], []
        for name in dataset.sequences:
            data = load_sequence(dataset, name)
            oracle = data.ground_truth if options.variant == "oracle" else None
            session = Session(network, options, ground_truth=oracle)
            labels = np.stack([session.step(f, data.start_masks.get(t)).labels for t, f in enumerate(data.frames)])
            objects += score_sequence(data.ground_truth, labels, name)
            rates += list(session.reuse_rates.values())
        j = np.mean([o.j_stats.mean for o in objects])
        f = np.mean([o.f_stats.mean for o in objects])
        s = _by_key(report)[key]
        assert s["J"] == pytest.approx(j, abs=1e-4) and s["F"] == pytest.approx(f, abs=1e-4)
        assert s["reuse_rate"] == pytest.approx(np.mean(rates), abs=1e-4)


def test_flops_of_the_paths(report, network):
    from torch.utils.flop_counter import FlopCounterMode

    flops = report["flops"]
    g = flops["gflops"]
    assert flops["resolution"] == [64, 96] and flops["objects"] == 1
    assert 0 < g["copy"] < g["reuse"] < g["computed"]  # the reuse path skips the deep network
    assert g["full"] < g["computed"]  # the dynamic network's full path adds template matching and gate
    # The start frame runs the backbone on the frame and its augmented copies, then fits the target model.
    backbone, counter = network.backbone, FlopCounterMode(display=False)
    with backbone.runtime_as("torch"), counter, torch.no_grad():  # the counter cannot see into ONNX Runtime
        backbone.f8_to_f32(backbone.to_f8(torch.rand(1, 3, 64, 96))[1])
        backbone.to_f16(torch.rand(network.config.target.num_augmented, 3, 64, 96))
    fit = g["start_frame"] - counter.get_total_flops() / 1e9
    assert fit > 0.01  # measured 0.077 GFLOPs at 64x96
    s = _by_key(report)
    assert s["reuse@0"]["computation_saved"] == pytest.approx(1 - g["reuse"] / g["computed"], abs=1e-3)
    assert s["copy@0"]["gflops_per_frame"] == pytest.approx(g["copy"], abs=1e-3)
    assert s["full"]["gflops_per_frame"] == pytest.approx(g["full"], abs=1e-3)


def test_flops_do_not_depend_on_the_backbone_runtime(network, synthetic_root):
    data = load_sequence(DavisDataset(synthetic_root, "val"), "one", 3)
    counts = {}
    for runtime in ("torch", "onnxruntime"):
        with network.backbone.runtime_as(runtime):
            counts[runtime] = count_flops(network, data)["gflops"]
    assert counts["onnxruntime"] == counts["torch"]


def test_each_setting_runs_the_backbone_it_names(network, synthetic_root, one_thread, monkeypatch):
    from reusevos.model import onnx_backbone

    calls = []
    run = onnx_backbone.OnnxBackbone.run
    monkeypatch.setattr(onnx_backbone.OnnxBackbone, "run", lambda self, *a: calls.append(a[0]) or run(self, *a))
    dataset = DavisDataset(synthetic_root, "val", sequences=["one"])
    for key, expected in (("full+torch", 0), ("full+ort", 6)):  # 6 frames: one to_f8 each
        calls.clear()
        run_benchmark(network, dataset, [parse_setting(key)], flops=False, warmup=False)
        assert calls.count("to_f8") == expected, key


def test_backbone_runtimes_as_settings(network, synthetic_root, one_thread):
    from reusevos.model.onnx_backbone import onnxruntime_version, openvino_available, openvino_version

    openvino = openvino_available()  # also OpenVINO's float32 where it is installed
    settings, _ = build_settings(["full"], [1.0], runtimes=["torch", "onnxruntime"] + ["openvino"] * openvino)
    report = run_benchmark(network, DavisDataset(synthetic_root, "val", sequences=["one"]), settings, flops=False)
    by_key = _by_key(report)
    assert list(by_key) == ["full+torch", "full+ort"] + ["full+ov"] * openvino
    assert by_key["full+torch"]["backbone_runtime"] == "torch"
    assert by_key["full+ort"]["backbone_runtime"] == "onnxruntime"
    assert by_key["full+ort"]["J&F"] == pytest.approx(by_key["full+torch"]["J&F"], abs=0.01)  # same features
    assert report["onnxruntime"] == onnxruntime_version() and report["openvino"] == openvino_version()
    assert f"backbone in PyTorch and ONNX Runtime {onnxruntime_version()}" in format_header(report)
    lines = [("full, backbone in PyTorch", ["full+torch"]), ("full, backbone in ONNX Runtime", ["full+ort"])]
    if openvino:
        assert by_key["full+ov"]["backbone_runtime"] == "openvino"
        assert by_key["full+ov"]["J&F"] == pytest.approx(by_key["full+torch"]["J&F"], abs=0.01)
        assert f"and OpenVINO {openvino_version()}," in format_header(report)
        lines.append(("full, backbone in OpenVINO", ["full+ov"]))
    # the figure draws one line per runtime, not one line through both
    assert [(label, [p["setting"] for p in points]) for _, label, points in figure_lines(report)] == lines
    assert network.backbone.runtime == "auto"  # left as it was


def test_the_network_is_left_as_it_was(report, network):
    for name in ("level32", "level16", "level8", "level4"):
        module = getattr(network.refiner, name)
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_tables_name_every_setting(report):
    table = format_table(report)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["setting", "frames", "FPS"]
    for s in report["settings"]:
        assert any(line.split()[0] == s["setting"] for line in lines[2:])
    assert "skipped: fusion@1/0.9 (fusion needs tau < tau2 = 0.9)" in table
    stages = format_stage_table(report)
    for stage in ("backbone_to_f8", "  refine_level4", "  refine_head", "initialisation", "mask_encoding"):
        assert any(line.startswith(stage) for line in stages.splitlines())


def _result(sequence: str, frames: int, time_s: float, kinds: dict, objects: dict, init_s: float = 1.0,
            object_frames=None) -> SequenceResult:
    full_kinds = {k: list(kinds.get(k, [0, 0.0])) for k in FRAME_KINDS}
    return SequenceResult(sequence, "reuse@0.5", frames, (48, 64), time_s, init_s, {"merge": 0.5}, full_kinds,
                          object_frames or {"computed": 0, "reused": 0, "copied": 0}, objects)


def test_aggregation_on_hand_made_results():
    # Sequence a: 5 frames, one object (reused 3 of 4); b: 4 frames, two objects (0 of 3, 3 of 3).
    a = _result("a", 5, 2.0, {"start": [1, 1.2], "computed": [1, 0.4], "reused": [3, 0.4]},
                {"1": {"started": True, "reused": 3, "tracked": 4, "j": [1.0, 0.5, 0.0], "f": [1.0, 1.0, 1.0]}},
                object_frames={"computed": 1, "reused": 3, "copied": 0})
    b = _result("b", 4, 3.0, {"start": [1, 2.0], "computed": [2, 0.6], "mixed": [1, 0.4]},
                {"1": {"started": True, "reused": 0, "tracked": 3, "j": [0.0, 0.0], "f": [0.0, 0.0]},
                 "2": {"started": True, "reused": 3, "tracked": 3, "j": [1.0, 1.0], "f": [0.5, 0.5]}},
                init_s=2.0, object_frames={"computed": 3, "reused": 3, "copied": 0})
    flops = {"gflops": {"full": 9.0, "computed": 10.0, "reuse": 6.0, "copy": 1.0}}
    s = summarise(Setting("reuse", 0.5), [a, b], flops)
    assert s["fps"] == pytest.approx(9 / 5.0, abs=1e-4)  # total frames / total time
    assert s["fps_excl_init"] == pytest.approx(7 / (5.0 - 3.2), abs=1e-4)  # frames without a start / their time
    assert s["init_s_per_object"] == pytest.approx(3.0 / 3, abs=1e-4)
    assert s["reuse_rate"] == pytest.approx((3 / 4 + 0 + 1) / 3, abs=1e-4)  # averaged over all objects
    assert s["J"] == pytest.approx((0.5 + 0.0 + 1.0) / 3, abs=1e-4)  # each object weighs the same
    assert s["F"] == pytest.approx((1.0 + 0.0 + 0.5) / 3, abs=1e-4)
    assert s["c"] == pytest.approx((0.4 / 3) / (1.0 / 3), abs=1e-4)  # mixed frames are left out
    assert s["c_reference"] == "reuse@0.5"
    assert s["computation_saved"] == pytest.approx(6 / 10 * (1 - 6 / 10), abs=1e-4)
    assert s["gflops_per_frame"] == pytest.approx(10 * (1 - 0.24), abs=1e-3)
    assert s["stages_s"]["merge"] == pytest.approx(1.0)
    round_trip = SequenceResult.from_dict(json.loads(json.dumps(a.to_dict())))
    assert round_trip == a


def test_references_stay_within_one_backbone_runtime():
    def summary(key, variant, tau, window, runtime, fps, computed=None, reused=None):
        return {"setting": key, "variant": variant, "tau": tau, "compute_window": window, "backbone_runtime": runtime,
                "fps": fps, "c": None, "frame_ms": {"computed": computed, "reused": reused, "copied": None}}

    summaries = [summary("full+torch", "full", 1.0, 0, "torch", 1.0, computed=500),
                 summary("full+ort", "full", 1.0, 0, "onnxruntime", 1.2, computed=450),
                 summary("full+c2+ort", "full", 1.0, 2, "onnxruntime", 2.0, computed=300),
                 summary("reuse@0+c2+ort", "reuse", 0.0, 2, "onnxruntime", 2.2, reused=280)]
    _add_references(summaries)
    by_key = {s["setting"]: s for s in summaries}
    assert by_key["full+torch"]["speedup"] is None and by_key["full+ort"]["speedup"] is None  # each its own base
    assert by_key["full+c2+ort"]["speedup_reference"] == "full+ort"
    assert by_key["full+c2+ort"]["speedup"] == pytest.approx(2.0 / 1.2, abs=1e-4)
    reuse = by_key["reuse@0+c2+ort"]
    assert reuse["speedup_reference"] == "full+ort" and reuse["speedup"] == pytest.approx(2.2 / 1.2, abs=1e-4)
    # no computed frame of its own: against the computed frames of the same runtime and compute window
    assert reuse["c_reference"] == "full+c2+ort" and reuse["c"] == pytest.approx(280 / 300, abs=1e-4)


def test_quick_picks_blackswan_first(synthetic_root, blackswan_root):
    assert quick_sequences(DavisDataset(blackswan_root, "val")) == ["blackswan"]
    assert quick_sequences(DavisDataset(synthetic_root, "val"), 1) == ["one"]
    data = load_sequence(DavisDataset(blackswan_root, "val"), "blackswan", max_frames=4, max_size=214)
    assert data.frames.shape == (4, 120, 214, 3) and data.ground_truth.shape == (4, 120, 214)
    assert set(np.unique(data.start_masks[0])) == {0, 1}


def test_ablation_writes_its_files_and_resumes(network, synthetic_root, tmp_path, one_thread):
    dataset = DavisDataset(synthetic_root, "val")
    out = tmp_path / "ablation"
    logs: list[str] = []
    report = run_ablation(network, dataset, out, ["reuse", "fusion"], [1.0, 0.0], 0.9, log=logs.append)
    assert [s["setting"] for s in report["settings"]] == ["reuse@1", "reuse@0", "fusion@0/0.9"]
    assert [s["setting"] for s in report["skipped"]] == ["fusion@1/0.9"]
    for name in ("ablation.json", "ablation.csv", "ablation.md", "fig7_jf_vs_fps.png", "fig8_jf_vs_reuse.png",
                 PARTIAL_FILE):
        assert (out / name).is_file()
    markdown = (out / "ablation.md").read_text().splitlines()
    assert f"{report['threads']} threads" in markdown[0] and report["commit"][:12] in markdown[0]
    assert [line.split(" | ")[0] for line in markdown[4:]] == [
        "| reuse@1", "| reuse@0", "| fusion@0/0.9", "| fusion@1/0.9"]
    for name in ("fig7_jf_vs_fps.png", "fig8_jf_vs_reuse.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 200
    rows = list(csv.DictReader(io.StringIO((out / "ablation.csv").read_text())))
    assert [(r["setting"], r["status"]) for r in rows] == [("reuse@1", "ok"), ("reuse@0", "ok"),
                                                           ("fusion@0/0.9", "ok"), ("fusion@1/0.9", "skipped")]
    assert float(rows[1]["reuse_rate"]) == 1.0 and rows[3]["note"] == "fusion needs tau < tau2 = 0.9"
    saved = json.loads((out / "ablation.json").read_text())
    assert saved["settings"] == report["settings"] and saved["files"]["csv"] == str(out / "ablation.csv")
    partial = (out / PARTIAL_FILE).read_text().splitlines()
    assert len(partial) == 2 * 3  # sequences x settings
    assert {(json.loads(l)["result"]["sequence"], json.loads(l)["result"]["setting"]) for l in partial} == {
        (q, k) for q in ("one", "two") for k in ("reuse@1", "reuse@0", "fusion@0/0.9")}

    # Run again: nothing is recomputed, and the figures are the same.
    logs.clear()
    again = run_ablation(network, dataset, out, ["reuse", "fusion"], [1.0, 0.0], 0.9, log=logs.append)
    assert logs == ["one [1/2]: all settings already done", "two [2/2]: all settings already done"]
    assert (out / PARTIAL_FILE).read_text().splitlines() == partial
    assert [s["J&F"] for s in again["settings"]] == [s["J&F"] for s in report["settings"]]
    assert [s["fps"] for s in again["settings"]] == [s["fps"] for s in report["settings"]]

    # An interruption mid-line: the torn line is dropped and only that sequence x setting is run again.
    (out / PARTIAL_FILE).write_text("\n".join(partial[:-1]) + "\n" + partial[-1][:40])
    logs.clear()
    run_ablation(network, dataset, out, ["reuse", "fusion"], [1.0, 0.0], 0.9, log=logs.append)
    last = json.loads(partial[-1])["result"]
    assert logs == ["one [1/2]: all settings already done",
                    next(l for l in logs if l.startswith(f"{last['sequence']} [2/2] {last['setting']}:"))]
    assert len((out / PARTIAL_FILE).read_text().splitlines()) == 6

    # Resumed on another kind of machine (the lines of sequence "one" say so): the scores are kept and the
    # report says that its timings mix two machines.
    lines = (out / PARTIAL_FILE).read_text().splitlines()
    moved = [json.dumps({**json.loads(l), "machine": "Other CPU (AVX512, 2 cpus)"})
             if json.loads(l)["result"]["sequence"] == "one" else l for l in lines]
    (out / PARTIAL_FILE).write_text("\n".join(moved) + "\n")
    mixed = run_ablation(network, dataset, out, ["reuse", "fusion"], [1.0, 0.0], 0.9)
    assert len(mixed["timed_on"]) == 2 and "Other CPU (AVX512, 2 cpus)" in mixed["timed_on"]
    assert "timed on 2 kinds of machine" in (out / "ablation.md").read_text()
    assert [s["J&F"] for s in mixed["settings"]] == [s["J&F"] for s in report["settings"]]
    assert report["timed_on"] == [machine_label()]

    # Other run conditions would mix numbers that do not compare: refused.
    with pytest.raises(ReusevosError, match="another run .*max_frames"):
        run_ablation(network, dataset, out, ["reuse"], [1.0], max_frames=4)


# -- the command line ---------------------------------------------------------------------------------------------
def _run_cli(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "reusevos", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_benchmark_command_quick_on_blackswan(blackswan_root, gate_weights, tmp_path):
    """The CI smoke run: quick mode on the shared clip, 10 frames at reduced size, random weights."""
    out = tmp_path / "bench.json"
    run = _run_cli("benchmark", blackswan_root, "--quick", "--max-frames", 10, "--max-size", 320, "--weights",
                   gate_weights, "--threads", 1, "--variant", "full,reuse,flow", "--tau", "1,0.7", "--json", out,
                   "--markdown", tmp_path / "bench.md", "--compute-window", "0,2", "--figure", tmp_path / "bench.png")
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    assert [s["setting"] for s in report["settings"]] == [  # the whole-video default's options (the search margin,
        "full", "full+c2+search2", "reuse@1", "reuse@0.7", "reuse@1+c2+search2", "reuse@0.7+c2+search2",  # flow's)
        "flow@1", "flow@0.7+g2+la+mf", "flow@1+c2+search2", "flow@0.7+g2+la+mf+c2+search2"]
    assert [s["compute_window"] for s in report["settings"]] == [0, 2, 0, 0, 2, 2, 0, 0, 2, 2]
    assert report["flops"]["gflops"]["flow"] == 0  # a moved frame runs no network
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["dataset"]["sequences"] == ["blackswan"] and report["dataset"]["frames"] == 10
    assert report["dataset"]["resolutions"] == {"blackswan": [180, 320]}
    assert report["threads"] == 1 and report["command"].startswith("reusevos benchmark ")
    assert "--quick" in report["command"] and report["weights"]["sha256"]
    for s in report["settings"]:
        assert s["frames"] == 10 and s["fps"] > 0 and 0 <= s["J&F"] <= 1
    assert report["flops"]["gflops"]["reuse"] < report["flops"]["gflops"]["computed"]
    lines = run.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("setting "))
    assert [line.split()[0] for line in lines[header + 2:header + 5]] == ["full", "full+c2+search2", "reuse@1"]
    assert any(line.startswith("ms per frame") for line in lines) and f"JSON: {out}" in run.stdout
    markdown = (tmp_path / "bench.md").read_text()
    assert "| reuse@0.7 |" in markdown and "1 threads" in markdown


def test_ablation_grid_with_a_compute_window_and_the_shipped_flow():
    settings, skipped = ablation_settings(["full", "reuse", "fusion", "flow"], [1.0, 0.75], 0.9, compute_window=2)
    assert [s.key for s in settings] == ["full+c2", "reuse@1+c2", "reuse@0.75+c2", "fusion@0.75/0.9+c2",
                                         "flow@1+c2", "flow@0.75+g2+la+mf+c2"]
    assert [s["setting"] for s in skipped] == ["fusion@1/0.9+c2"]
    shipped = offline_config()
    flow = settings[-1].options()
    assert (flow.flow_max_gap, flow.lookahead, flow.memory_clock, flow.compute_window) == \
        (shipped.flow_max_gap, shipped.lookahead, shipped.memory_clock, shipped.compute_window)
    # at tau 1 the gated variants are one run (template matcher and gate included); flow is full, at full's cost
    assert _same_at_tau_one(settings) == {"flow@1+c2": "full+c2"}
    assert _same_at_tau_one(ablation_settings(["copy", "flow", "reuse"], [1.0], 0.9)[0]) == {"reuse@1": "copy@1"}
    # without a compute window the grid is the paper's, as before
    assert [s.key for s in ablation_settings(["reuse"], [0.7], 0.9)[0]] == ["reuse@0.7"]


def test_ablation_command(synthetic_root, gate_weights, tmp_path):
    out = tmp_path / "docs"
    run = _run_cli("ablation", synthetic_root, "--split", "val", "--out", out, "--taus", "1,0", "--variants",
                   "reuse,copy", "--weights", gate_weights, "--threads", 1, "--sequences", "one")
    assert run.returncode == 0, run.stderr
    report = json.loads((out / "ablation.json").read_text())
    assert [s["setting"] for s in report["settings"]] == ["reuse@1", "reuse@0", "copy@1", "copy@0"]
    assert report["dataset"]["sequences"] == ["one"]
    assert (out / "fig7_jf_vs_fps.png").is_file() and (out / "fig8_jf_vs_reuse.png").is_file()
    assert "written: " in run.stdout
    # At tau = 1 nothing reuses: copy@1 is reuse@1's run, not a second one.
    partial = [json.loads(line)["result"]["setting"] for line in (out / "partial.jsonl").read_text().splitlines()]
    assert partial == ["reuse@1", "reuse@0", "copy@0"]
    copy_one = report["settings"][2]
    assert copy_one["measured_as"] == "reuse@1" and copy_one["variant"] == "copy"
    assert copy_one["J&F"] == report["settings"][0]["J&F"]

    # --finished-only computes nothing and writes the same report from the finished sequences.
    (out / "ablation.json").unlink()
    again = _run_cli("ablation", synthetic_root, "--split", "val", "--out", out, "--taus", "1,0", "--variants",
                     "reuse,copy", "--weights", gate_weights, "--threads", 1, "--finished-only")
    assert again.returncode == 0, again.stderr
    assert [json.loads(line)["result"]["setting"] for line in (out / "partial.jsonl").read_text().splitlines()] \
        == partial
    rerun = json.loads((out / "ablation.json").read_text())
    assert rerun["dataset"]["sequences"] == ["one"]  # "two" has not run: left out
    assert [s["J&F"] for s in rerun["settings"]] == [s["J&F"] for s in report["settings"]]
    empty = _run_cli("ablation", synthetic_root, "--split", "val", "--out", tmp_path / "none", "--weights",
                     gate_weights, "--threads", 1, "--finished-only")
    assert empty.returncode == 2 and "nothing has finished yet" in empty.stderr


def test_benchmark_command_named_settings(synthetic_root, gate_weights, tmp_path):
    out = tmp_path / "bench.json"
    run = _run_cli("benchmark", synthetic_root, "--sequences", "one", "--settings",
                   "reuse@0.5+c2+ort,full+torch,flow@0.5+g2+la+c2", "--weights", gate_weights, "--threads", 1,
                   "--no-flops", "--json", out)
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    assert [(s["setting"], s["backbone_runtime"], s["compute_window"]) for s in report["settings"]] == [
        ("reuse@0.5+c2+ort", "onnxruntime", 2), ("full+torch", "torch", 0), ("flow@0.5+g2+la+c2", "onnxruntime", 2)]
    ahead = report["settings"][2]  # the lookahead through the benchmark: every frame scored, in order
    assert ahead["lookahead"] is True and ahead["flow_max_gap"] == 2
    assert ahead["frames"] == report["settings"][1]["frames"]
    assert 0 <= ahead["J&F"] <= 1 and ahead["fps"] > 0


@pytest.mark.parametrize("args, message", [
    (["--variant", "warp"], "unknown variant 'warp'"),
    (["--tau", "1.5"], "must lie in [0, 1]"),
    (["--tau", "fast"], "--tau 'fast': give comma-separated numbers"),
    (["--max-frames", "2"], "--max-frames 2"),
    (["--settings", "full+c2,reuse@0.7", "--tau", "0.5"], "--settings names every setting in full; drop --tau"),
    (["--settings", "reuse"], "give the variant's tau"),
    (["--backbone-runtime", "tvm"], "unknown backbone runtime 'tvm'"),
    (["--lookahead", "maybe"], "--lookahead 'maybe': give on, off or on,off"),
])
def test_benchmark_command_bad_input(synthetic_root, gate_weights, args, message):
    run = cli("benchmark", synthetic_root, "--weights", gate_weights, *args)
    assert run.returncode == 2
    assert message in run.stderr and "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1
