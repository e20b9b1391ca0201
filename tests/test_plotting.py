"""Figures, widgets and the runtime helper: the code every notebook calls first.

Figures are checked structurally (axes, tick labels) rather than by pixels, so
the tests survive style tweaks but catch a figure that lost its labels.
"""

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from vocolab.core import runtime  # noqa: E402
from vocolab.core.layout import build_layout  # noqa: E402
from vocolab.core.masks import build_mask  # noqa: E402
from vocolab.reporting import provenance, widgets  # noqa: E402
from vocolab.reporting.accuracy import plot_family_accuracy, plot_parameter_counts  # noqa: E402
from vocolab.reporting.costs import plot_cache_bytes, plot_inference_costs  # noqa: E402
from vocolab.reporting.images import plot_clip, plot_images  # noqa: E402
from vocolab.reporting.masks import layout_segments, plot_mask, plot_mask_modes  # noqa: E402
from vocolab.reporting.style import save_figure  # noqa: E402
from vocolab.reporting.training import plot_training_curves  # noqa: E402


def _labels(ticks):
    return [t.get_text() for t in ticks]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def image_layout():
    return build_layout(5, 3, image_tokens=16, voco_tokens=2)


@pytest.fixture
def clip_layout():
    return build_layout(4, 2, frames=3, image_tokens=6, voco_tokens=1)


def test_layout_segments_cover_the_sequence(image_layout):
    segs = layout_segments(image_layout, length=30)
    assert [s[0] for s in segs] == ["BOS", "IMG", "VOCO", "Q", "A", "PAD"]
    assert segs[0][1] == 0 and segs[-1][2] == 30
    assert all(a[2] == b[1] for a, b in zip(segs, segs[1:]))  # contiguous, no gaps


def test_plot_mask_labels_segments(image_layout):
    fig = plot_mask(build_mask([image_layout], "voco")[0, 0], image_layout, title="voco")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2  # heatmap + colorbar legend
    ax = fig.axes[0]
    assert _labels(ax.get_xticklabels()) == ["BOS", "IMG", "VOCO", "Q", "A"]
    assert _labels(ax.get_yticklabels()) == ["BOS", "IMG", "VOCO", "Q", "A"]
    assert _labels(fig.axes[1].get_yticklabels()) == ["blocked", "may attend"]
    assert ax.get_title() == "voco"


def test_plot_mask_batch_sample_and_frames(image_layout, clip_layout):
    assert clip_layout.length > image_layout.length  # so sample 1 is padded
    batch = build_mask([clip_layout, image_layout], "video")
    fig = plot_mask(batch, [clip_layout, image_layout], sample=0, legend=False)
    assert len(fig.axes) == 1
    labels = _labels(fig.axes[0].get_xticklabels())
    assert labels == ["BOS", "IMG1", "VOCO1", "IMG2", "VOCO2", "IMG3", "VOCO3", "Q", "A"]
    fig = plot_mask(batch, [clip_layout, image_layout], sample=1)
    assert _labels(fig.axes[0].get_yticklabels()) == ["BOS", "IMG", "VOCO", "Q", "A", "PAD"]


def test_plot_mask_into_given_axes(image_layout):
    fig, ax = plt.subplots()
    out = plot_mask(build_mask([image_layout], "causal"), image_layout, ax=ax)
    assert out is fig


def test_plot_mask_rejects_non_square():
    with pytest.raises(ValueError):
        plot_mask(torch.ones(3, 4, dtype=torch.bool), build_layout(1, 1))


def test_plot_mask_modes_one_panel_per_mode(clip_layout):
    fig = plot_mask_modes(clip_layout)
    assert len(fig.axes) == 3
    assert [ax.get_title().split(":")[0] for ax in fig.axes] == ["causal", "voco", "video"]
    assert "VOCO2" in _labels(fig.axes[2].get_xticklabels())
    fig = plot_mask_modes(clip_layout, modes=("voco",), length=clip_layout.length + 3)
    assert len(fig.axes) == 1 and "PAD" in _labels(fig.axes[0].get_yticklabels())


def test_plot_images_grid_and_titles():
    images = [np.zeros((64, 64, 3), np.uint8) for _ in range(5)]
    titles = [f"Q: what colour is the large circle number {i}? A: red" for i in range(5)]
    fig = plot_images(images, titles, cols=3)
    assert len(fig.axes) == 5  # the sixth, empty cell of the 2x3 grid is removed
    assert "\n" in fig.axes[0].get_title()  # long captions are wrapped
    with pytest.raises(ValueError):
        plot_images(images, titles[:2])


def test_plot_clip_labels_time():
    fig = plot_clip(np.zeros((4, 32, 32, 3), np.uint8), title="a red square moves right")
    assert [ax.get_title() for ax in fig.axes] == ["t=0", "t=1", "t=2", "t=3"]


def test_plot_parameter_counts():
    report = {"nano": {"vision": 100_000, "projector": 8_000, "llm": 1_500_000, "total": 1_608_000},
              "small": {"vision": 2_700_000, "projector": 70_000, "llm": 14_000_000, "total": 16_770_000}}
    fig = plot_parameter_counts(report)
    ax = fig.axes[0]
    assert len(fig.axes) == 1
    assert ax.get_yscale() == "log"
    assert _labels(ax.get_xticklabels()) == ["nano", "small"]
    assert len(ax.patches) == 8
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["vision", "projector", "llm", "total"]


def test_plot_family_accuracy():
    runs = {"blind": {"color": 0.14, "count": 0.35, "exist": 0.5},
            "best single frame": {"color": 0.2, "exist": 0.6}}  # a run may miss a family
    chance = {"color": 1 / 7, "count": 1 / 7, "exist": 0.5}
    fig = plot_family_accuracy(runs, chance, families=["exist", "color", "count"], title="t")
    ax = fig.axes[0]
    assert len(fig.axes) == 1 and ax.get_title() == "t"
    assert _labels(ax.get_xticklabels()) == ["exist", "color", "count"]
    assert len(ax.patches) == 6  # runs x families; the missing bar is NaN, not dropped
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["blind", "best single frame", "chance"]
    assert len(ax.collections) == 3  # one chance line per family
    heights = [p.get_height() for p in ax.patches]
    assert heights[:3] == [0.5, 0.14, 0.35] and np.isnan(heights[5])
    assert "50" in [t.get_text() for t in ax.texts]  # values printed in percent
    # default order: first appearance; no chance given -> no lines, no legend entry
    fig = plot_family_accuracy({"blind": {"b": 0.2, "a": 0.4}})
    assert _labels(fig.axes[0].get_xticklabels()) == ["b", "a"]
    assert not fig.axes[0].collections
    with pytest.raises(ValueError):
        plot_family_accuracy({})


def test_save_figure_writes_png(tmp_path, image_layout):
    fig = plot_mask_modes(image_layout)
    path = save_figure(fig, tmp_path / "nested" / "modes")
    assert path.suffix == ".png" and path.exists()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)  # closed


@pytest.mark.parametrize("mode", ["causal", "voco", "video"])
def test_explorer_state_mask_matches_build_mask(mode):
    layout, mask = widgets.explorer_state_mask(12, 2, 4, 3, 2, mode)
    assert layout == build_layout(4, 3, frames=2, image_tokens=12, voco_tokens=2)
    assert torch.equal(mask, build_mask([layout], mode))


def test_mask_explorer_constructs():
    import ipywidgets as W

    w = widgets.mask_explorer(max_image_tokens=8, max_voco=2, max_text=4, max_frames=2)
    assert isinstance(w, W.Widget)
    sliders = [c for c in w.children[0].children[0].children + w.children[0].children[1].children]
    assert len(sliders) == 5 and all(isinstance(s, W.IntSlider) for s in sliders)
    sliders[0].value = 4  # a change redraws without error
    assert "L =" in w.children[2].value


def test_setup_reads_preset_from_env(monkeypatch, capsys):
    monkeypatch.setenv("VOCOLAB_PRESET", "nano")
    monkeypatch.setenv("VOCOLAB_QUICK", "1")
    info = runtime.setup()
    assert isinstance(info, runtime.RunInfo)
    assert info.preset == "nano" and info.config.preset == "nano"
    assert info.quick is True and info.seed == 0
    assert isinstance(info.device, torch.device)
    line = capsys.readouterr().out
    assert "preset nano" in line and "quick mode ON" in line and "torch" in line
    assert runtime.setup("small", verbose=False).preset == "small"  # the argument wins
    with pytest.raises(ValueError):
        runtime.setup("huge", verbose=False)


def test_setup_seeds_and_keeps_user_env(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    runtime.setup("nano", seed=3, verbose=False)
    a = torch.rand(3)
    runtime.setup("nano", seed=3, verbose=False)
    assert torch.equal(a, torch.rand(3))
    assert os.environ["HF_HUB_OFFLINE"] == "0"


def test_provenance_has_design_keys():
    prov = provenance.provenance("vocolab eval --preset nano", "nano", 0, 1.5)
    for key in ("command", "commit", "dirty", "preset", "seed", "device", "cpu", "cpu_kernels", "versions",
                "wall_s"):
        assert key in prov
    assert prov["cpu"] == provenance.cpu_name() and prov["cpu"]
    assert prov["cpu_kernels"] == provenance.cpu_kernels()
    for pkg in ("python", "torch", "transformers", "lightning", "datasets", "vocolab"):
        assert prov["versions"][pkg]
    assert prov["preset"] == "nano" and prov["seed"] == 0 and prov["wall_s"] == 1.5
    assert isinstance(prov["commit"], str) and prov["commit"]


def test_the_cpu_name_is_the_processor_model_else_platforms_else_unknown(monkeypatch):
    import builtins
    import platform

    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text(errors="replace").splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("model name")]
    if names:
        assert provenance.cpu_name() == names[0]

    def no_cpuinfo(*args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr(builtins, "open", no_cpuinfo)
    monkeypatch.setattr(platform, "processor", lambda: "Intel64 Family 6")
    assert provenance.cpu_name() == "Intel64 Family 6"
    monkeypatch.setattr(platform, "processor", lambda: "")
    assert provenance.cpu_name() == "unknown"


def test_the_cpu_kernels_name_the_vector_level_threads_and_only_the_pinning_settings_set(monkeypatch):
    for name in provenance.KERNEL_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    kernels = provenance.cpu_kernels()
    assert kernels == {"capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
                       "settings": {}}
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "")  # set but empty: not a setting
    monkeypatch.setenv("OMP_PROC_BIND", "true")  # not a kernel setting
    assert provenance.cpu_kernels()["settings"] == {"MKL_CBWR": "COMPATIBLE"}


def test_a_runs_own_output_folder_does_not_make_the_checkout_dirty(tmp_path, monkeypatch):
    import subprocess

    def git(*args):
        out = subprocess.run(["git", *args], cwd=tmp_path, capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else None

    git("init", "-q")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(provenance, "_git", git)
    assert provenance.git_state()[1] is False
    (tmp_path / "out" / "results.json").write_text('{"rewritten": true}')  # the run writes its results
    assert provenance.git_state()[1] is True
    assert provenance.git_state(tmp_path / "out")[1] is False
    assert provenance.provenance("c", "nano", 0, 1.0, out=tmp_path / "out")["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2")  # the code changed: dirty whatever the output folder
    assert provenance.git_state(tmp_path / "out")[1] is True
    assert provenance.git_state(tmp_path.parent / "elsewhere")[1] is True  # a folder outside the checkout


def test_plot_cache_bytes_log_log_with_full_line():
    ks = [1, 2, 4, 8, 16, 32, 64]
    per_token = 2 * 2 * 2 * 32 * 4  # layers x (K, V) x kv_heads x head_dim x fp32
    fig = plot_cache_bytes(ks, [per_token * k for k in ks], per_token * 66, image_tokens=64)
    ax = fig.axes[0]
    assert len(fig.axes) == 1
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert _labels(ax.get_xticklabels()) == [str(k) for k in ks]
    voco, full = ax.get_lines()
    assert list(voco.get_xdata()) == ks and list(voco.get_ydata()) == [per_token * k for k in ks]
    assert set(full.get_ydata()) == {per_token * 66}  # horizontal line at the full cache size
    notes = [t.get_text() for t in ax.texts]
    assert notes[0] == "V/K=64" and notes[-1] == "V/K=1" and len(notes) == len(ks)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0].startswith("VoCo cache") and legend[1].startswith("full cache")
    # without V the annotation is the measured byte ratio full / VoCo
    fig = plot_cache_bytes([1, 4], [10, 40], 640)
    assert [t.get_text() for t in fig.axes[0].texts] == ["64x", "16x"]
    fig, ax = plt.subplots()
    assert plot_cache_bytes([1], [10], 100, ax=ax) is fig
    with pytest.raises(ValueError):
        plot_cache_bytes([1, 2], [10], 100)
    with pytest.raises(ValueError):
        plot_cache_bytes([0, 2], [10, 20], 100)


def test_plot_training_curves_reads_lightning_csv(tmp_path):
    upper = tmp_path / "upper.csv"
    upper.write_text("epoch,step,train/loss\n" + "".join(f"0,{i},{3.0 - 0.1 * i}\n" for i in range(8)))
    fig = plot_training_curves({"upper": upper}, smooth=3)
    assert len(fig.axes) == 1  # nothing validated: no empty accuracy panel
    (line,) = fig.axes[0].get_lines()
    assert list(line.get_xdata()) == list(range(2, 8))  # a 3-step moving average
    voco = tmp_path / "voco.csv"
    voco.write_text("epoch,step,train/loss,val/exact_match\n0,0,2.0,\n0,1,1.5,\n0,1,,0.25\n")
    fig = plot_training_curves({"upper": upper, "voco": voco})
    assert len(fig.axes) == 2 and fig.axes[1].get_lines()[0].get_ydata()[0] == 0.25
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["upper", "voco"]
    distilled = tmp_path / "distilled.csv"  # the next-token part is drawn, not ce + distillation terms
    distilled.write_text("epoch,step,train/ce,train/hidden,train/loss\n0,0,1.0,6.0,7.0\n0,1,0.5,4.0,4.5\n")
    (line,) = plot_training_curves({"voco": distilled}, smooth=1).axes[0].get_lines()
    assert list(line.get_ydata()) == [1.0, 0.5]


def test_plot_inference_costs_three_panels():
    def row(flops, ms, nbytes, tokens):
        return {"flops": flops, "latency_ms": {"median": ms}, "cache_bytes": nbytes, "cached_tokens": tokens}

    cost = {"settings": {"no_caching": row(165e6, 10.5, 0, 0), "full_caching": row(20.7e6, 7.0, 270_336, 66),
                         "voco_caching": row(19.2e6, 6.7, 4096, 1)},
            "image_tokens": 64, "voco_tokens": 1, "question_tokens": 11, "device": "cpu"}
    fig = plot_inference_costs(cost)
    flops, latency, size = fig.axes
    assert len(fig.axes) == 3
    # linear everywhere: a bar on a log axis made the VoCo cache look empty
    assert [flops.get_yscale(), latency.get_yscale(), size.get_yscale()] == ["linear", "linear", "linear"]
    assert _labels(size.get_xticklabels()) == ["no caching", "full caching", "VoCo caching"]
    # nothing cached is said, not hidden; each cache states its share of the full one
    assert [t.get_text() for t in size.texts] == ["none", "270kB\n1 of full", "4.1kB\n0.015 of full"]
    assert [t.get_text() for t in flops.texts] == ["165M", "20.7M", "19.2M"]
    assert "V=64" in fig._suptitle.get_text()


def test_layout_segments_label_every_turn():
    from vocolab.core.layout import SpecialIds, assemble_turns

    ids = SpecialIds(bos=1, eos=2, pad=0, image=3, voco=4)
    _, layout = assemble_turns([([10, 11], [12]), ([13, 14, 15], [16])], ids, image_tokens=4, voco_tokens=1)
    segs = layout_segments(layout)
    assert [s[0] for s in segs] == ["BOS", "IMG", "VOCO", "Q1", "A1", "Q2", "A2"]
    assert segs[-1][2] == layout.length and all(a[2] == b[1] for a, b in zip(segs, segs[1:]))


def test_wrapped_captions_never_open_a_line_with_punctuation():
    from vocolab.reporting.images import wrap_text

    caption = "a red circle top left , a blue square in the middle , a green diamond at the bottom right ."
    lines = wrap_text(caption, 25).split("\n")  # plain textwrap opens line 3 with ","
    assert len(lines) > 1 and " ".join(lines) == caption  # same words, only the breaks moved
    assert not any(line.lstrip()[0] in ",.?" for line in lines)
