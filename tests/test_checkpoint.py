"""Checkpoints: exact round trip, clear errors, and never a half-written directory."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny import SPECIAL, VOCAB, tiny_cfg

import vocolab.models.checkpoint as ckpt
from vocolab.core.layout import assemble, pad_batch
from vocolab.models.checkpoint import load_checkpoint, save_checkpoint
from vocolab.models.vlm import VoCoVLM


def tiny_vlm(seed=0):
    torch.manual_seed(seed)
    return VoCoVLM(tiny_cfg(), SPECIAL, VOCAB).eval()


def logits(model):
    tokens, layout = assemble([10, 11], [12], SPECIAL, image_tokens=16, voco_tokens=1)
    pix = torch.randint(0, 256, (1, 16, 16, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    with torch.no_grad():
        return model(pad_batch([tokens], SPECIAL.pad), [layout], pixels=pix).logits


def test_round_trip_gives_identical_logits(tmp_path):
    model = tiny_vlm()
    out = save_checkpoint(model, model.cfg, tmp_path / "ckpt", metadata={"stage": "instruct", "step": 7})
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "meta.json", "model.safetensors"]
    loaded, cfg, meta = load_checkpoint(out)
    assert torch.equal(logits(loaded), logits(model))
    assert cfg == model.cfg and loaded.special == SPECIAL and loaded.vocab_size == VOCAB
    assert meta["stage"] == "instruct" and meta["step"] == 7
    assert {"vocolab_version", "torch_version", "transformers_version", "weights_sha256"} <= set(meta)
    assert loaded.llm.lm_head.weight is loaded.llm.get_input_embeddings().weight  # still tied
    # saving again replaces the previous checkpoint, leaving no temporary siblings
    save_checkpoint(tiny_vlm(seed=1), model.cfg, out)
    assert not torch.equal(logits(load_checkpoint(out)[0]), logits(model))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_round_trip_keeps_dtype(tmp_path):
    model = tiny_vlm().to(torch.bfloat16)
    loaded, _, meta = load_checkpoint(save_checkpoint(model, model.cfg, tmp_path / "bf16"))
    assert meta["dtype"] == "bfloat16" and next(loaded.parameters()).dtype == torch.bfloat16
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_missing_and_corrupt_files_raise_value_error(tmp_path):
    model = tiny_vlm()
    good = save_checkpoint(model, model.cfg, tmp_path / "good")
    with pytest.raises(ValueError, match="not a directory"):
        load_checkpoint(tmp_path / "nowhere")

    def broken(name, edit):
        target = tmp_path / name
        save_checkpoint(model, model.cfg, target)
        edit(target)
        return target

    cases = {
        "lacks": broken("no-weights", lambda d: (d / "model.safetensors").unlink()),
        "lacks ": broken("no-meta", lambda d: (d / "meta.json").unlink()),
        "corrupt": broken("truncated", lambda d: (d / "model.safetensors").write_bytes(b"\x08\x00")),
    }
    for match, target in cases.items():
        with pytest.raises(ValueError, match=match.strip()):
            load_checkpoint(target)

    # one flipped byte in the tensor data (valid header) is caught by the checksum
    flipped = broken("flipped", lambda d: None)
    data = bytearray((flipped / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (flipped / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(flipped)

    # a garbage header without a checksum to compare against is still a ValueError
    garbage = broken("garbage", lambda d: None)
    meta = json.loads((garbage / "meta.json").read_text())
    del meta["weights_sha256"]
    (garbage / "meta.json").write_text(json.dumps(meta))
    (garbage / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(garbage)

    # weights that do not fit the stored config
    mismatch = broken("mismatch", lambda d: None)
    cfg = json.loads((mismatch / "config.json").read_text())
    cfg["llm"]["intermediate_size"] = 96
    (mismatch / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="do not match"):
        load_checkpoint(mismatch)

    # a model saved before frames had embeddings loads with zero ones (it never told frames apart);
    # any other weight missing is still a mismatch
    def drop(d, name):
        state = load_file(d / "model.safetensors")
        del state[name]
        save_file(state, d / "model.safetensors")
        meta = json.loads((d / "meta.json").read_text())
        meta.pop("weights_sha256", None)
        (d / "meta.json").write_text(json.dumps(meta))

    older = broken("older", lambda d: (drop(d, "frame_positions"), drop(d, "frame_deltas.weight")))
    loaded = load_checkpoint(older)[0]
    assert loaded.frame_positions.abs().max() == 0 and loaded.frame_deltas.weight.abs().max() == 0
    with pytest.raises(ValueError, match="do not match"):
        load_checkpoint(broken("no-slots", lambda d: drop(d, "voco_slots")))

    bad_meta = broken("bad-meta", lambda d: (d / "meta.json").write_text("{not json"))
    with pytest.raises(ValueError, match="meta.json"):
        load_checkpoint(bad_meta)
    assert load_checkpoint(good)[0] is not None


def test_save_refuses_bad_requests(tmp_path):
    model = tiny_vlm()
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(model, model.cfg, tmp_path / "a", metadata={"vocab_size": 1})
    with pytest.raises(ValueError, match="does not describe"):
        save_checkpoint(model, tiny_cfg(**{"llm.layers": 3}), tmp_path / "b")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match="not a vocolab checkpoint"):
        save_checkpoint(model, model.cfg, tmp_path / "notes")
    assert (tmp_path / "notes" / "thesis.tex").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]


def test_a_failed_save_leaves_nothing_half_written(tmp_path, monkeypatch):
    model = tiny_vlm()
    previous = save_checkpoint(model, model.cfg, tmp_path / "ckpt", metadata={"run": "first"})

    def crash(module, filename, *args, **kwargs):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_model", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tiny_vlm(seed=1), model.cfg, tmp_path / "fresh")
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tiny_vlm(seed=1), model.cfg, previous, metadata={"run": "second"})
    monkeypatch.undo()

    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no "fresh", no temp dirs
    loaded, _, meta = load_checkpoint(previous)  # the old checkpoint is intact
    assert meta["run"] == "first" and torch.equal(logits(loaded), logits(model))


def test_a_checkpoint_of_another_vocabulary_is_refused(tmp_path):
    """Token ids mean words: a model trained when the word list was different would answer
    in the wrong words without any error."""
    vlm = VoCoVLM(tiny_cfg(), SPECIAL, VOCAB)
    out = save_checkpoint(vlm, vlm.cfg, tmp_path / "ckpt")
    meta = json.loads((out / "meta.json").read_text())
    meta["vocabulary"] = meta["vocabulary"][:-1]
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="another vocabulary"):
        load_checkpoint(out)


def test_a_model_saved_for_another_key_is_not_loaded(tmp_path):
    """A study reuses a saved model only when its meta holds the run's key; the meta is read
    first, so weights that no longer fit today's config are never loaded."""
    from vocolab.models.checkpoint import load_if_saved_for

    vlm = VoCoVLM(tiny_cfg(), SPECIAL, VOCAB)
    save_checkpoint(vlm, vlm.cfg, tmp_path / "m", {"model_key": "abc"})
    assert load_if_saved_for(tmp_path / "m", model_key="other") is None
    assert load_if_saved_for(tmp_path / "missing", model_key="abc") is None
    model, cfg, meta = load_if_saved_for(tmp_path / "m", model_key="abc")
    assert meta["model_key"] == "abc" and cfg == vlm.cfg
    (tmp_path / "m" / "model.safetensors").write_bytes(b"broken")  # a stale or damaged model
    assert load_if_saved_for(tmp_path / "m", model_key="other") is None  # not even opened
