"""embed_pairs on tiny models: dedup, alignment, dropping, resumption, errors."""

import logging

import numpy as np
import pandas as pd
import pytest
import torch

import steerable_alignment.embedding.core as core
from steerable_alignment.contracts import DataContractError
from steerable_alignment.embedding import (
    EmbeddingConfig,
    KnownEmbeddings,
    differing_settings,
    embed_pairs,
    tokenize_texts,
)
from steerable_alignment.models.config import ConfigError
from tests.embedding.tiny_models import make_pairs


def _config(model, **changes):
    params = {"name": "hh", "model": str(model), "pooling": "last_token", "progress": False}
    return EmbeddingConfig.from_params({**params, **changes})


def _reference(folder, prompt, response, pooling="last_token"):
    """One text embedded alone, the straightforward way."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        hidden = model(input_ids=ids).last_hidden_state[0]  # (L, D)
    return hidden[-1] if pooling == "last_token" else hidden.mean(0)


class _CountingModel(torch.nn.Module):
    """Wraps a model and records every text (row of input ids) it is given."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.seen: list[tuple[int, ...]] = []

    def forward(self, input_ids, attention_mask, **kwargs):
        for ids, mask in zip(input_ids, attention_mask):
            self.seen.append(tuple(ids[mask.bool()].tolist()))
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


def _counting(monkeypatch) -> list[_CountingModel]:
    """Make ``core.load_model`` wrap every model it loads in a :class:`_CountingModel`."""
    models = []
    load = core.load_model

    def counting_load(*args, **kwargs):
        models.append(_CountingModel(load(*args, **kwargs)))
        return models[-1]

    monkeypatch.setattr(core, "load_model", counting_load)
    return models


def test_features_are_aligned_with_the_pairs_table(tiny_llama):
    pairs = make_pairs(num_prompts=3, responses=4).sample(frac=1.0, random_state=1)
    result = embed_pairs(pairs, _config(tiny_llama))
    features = result.features
    assert torch.equal(features["pair_id"], torch.tensor(pairs["pair_id"].to_numpy()))
    assert features["features"].shape == (len(pairs), 2, 32)
    assert features["features"].dtype == torch.float32
    for i in (0, 5, len(pairs) - 1):
        row = pairs.iloc[i]
        for side, column in enumerate(("response_a", "response_b")):
            expected = _reference(tiny_llama, row["prompt"], row[column])
            torch.testing.assert_close(features["features"][i, side], expected, atol=1e-5, rtol=0)


def test_features_record_the_settings_that_made_them(tiny_llama):
    import json

    from steerable_alignment.embedding import embedding_settings

    config = _config(tiny_llama, max_length=64)
    features = embed_pairs(make_pairs(num_prompts=2, responses=2), config).features
    recorded = json.loads(features["embedding"])
    assert recorded == embedding_settings(config)
    assert recorded["model"] == str(tiny_llama) and recorded["max_length"] == 64
    assert recorded["pooling"] == "last_token" and "overflow" in recorded


def test_each_distinct_text_is_embedded_once(tiny_llama, monkeypatch):
    pairs = make_pairs(num_prompts=4, responses=4)  # 4 x 6 pairs, 4 x 4 distinct texts
    models = _counting(monkeypatch)
    result = embed_pairs(pairs, _config(tiny_llama, batch_tokens=256))
    seen = models[0].seen
    assert len(seen) == len(set(seen)) == 16  # 48 sides, 16 texts, each once
    assert result.stats.texts_embedded == 16 and result.stats.num_texts == 16
    # a completion shared by several pairs has one embedding wherever it appears
    shared = pairs.index[pairs["response_a"] == pairs["response_a"].iloc[0]]
    first = result.features["features"][shared, 0]
    assert torch.equal(first, first[:1].expand_as(first))


def test_over_long_texts_are_dropped_with_their_pairs(tiny_llama, caplog):
    from transformers import AutoTokenizer

    pairs = make_pairs(num_prompts=5, responses=4, seed=3)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    lengths = {}
    for column in ("response_a", "response_b"):
        tokens = tokenize_texts(tokenizer, pairs["prompt"], pairs[column], "chat")
        lengths[column] = tokens.lengths
    max_length = int(np.median(np.concatenate(list(lengths.values()))))
    fits = (lengths["response_a"] <= max_length) & (lengths["response_b"] <= max_length)
    assert 0 < fits.sum() < len(pairs)
    with caplog.at_level(logging.WARNING, logger="steerable_alignment.embedding"):
        result = embed_pairs(pairs, _config(tiny_llama, max_length=max_length, overflow="drop"))
    kept = pairs["pair_id"].to_numpy()[fits]
    assert result.features["pair_id"].tolist() == kept.tolist()  # order kept, dropped removed
    assert result.features["features"].shape[0] == fits.sum()
    assert result.stats.num_pairs_kept == fits.sum()
    assert result.stats.num_texts_dropped > 0
    assert f"dropping them and the {len(pairs) - fits.sum()} pair(s)" in caplog.text


def test_over_long_texts_are_truncated_by_default_and_every_pair_kept(tiny_llama, caplog):
    from transformers import AutoModel, AutoTokenizer

    from steerable_alignment.embedding import truncate_texts

    pairs = make_pairs(num_prompts=5, responses=4, seed=3)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    tokens = tokenize_texts(tokenizer, pairs["prompt"], pairs["response_a"], "chat")
    max_length = int(np.median(tokens.lengths))
    over = tokens.lengths > max_length
    assert 0 < over.sum() < len(pairs)
    with caplog.at_level(logging.WARNING, logger="steerable_alignment.embedding"):
        result = embed_pairs(pairs, _config(tiny_llama, max_length=max_length))
    assert result.features["pair_id"].tolist() == pairs["pair_id"].tolist()  # nothing dropped
    assert result.stats.num_texts_dropped == 0 and result.stats.num_texts_truncated > 0
    assert "cut to fit" in caplog.text
    # a cut text is embedded as its truncated tokens, and one that fits as before
    model = AutoModel.from_pretrained(tiny_llama).eval()
    cut, _ = truncate_texts(tokens, max_length)
    for row in (int(np.flatnonzero(over)[0]), int(np.flatnonzero(~over)[0])):
        ids = torch.tensor([cut.text(row).input_ids])
        assert ids.shape[1] <= max_length
        with torch.no_grad():
            expected = model(input_ids=ids).last_hidden_state[0, -1]
        torch.testing.assert_close(result.features["features"][row, 0], expected)
    fitting = ~torch.from_numpy(over)
    untouched = embed_pairs(pairs, _config(tiny_llama, overflow="drop")).features["features"]
    torch.testing.assert_close(result.features["features"][fitting, 0], untouched[fitting, 0])


def test_output_dtype_and_normalisation(tiny_bert):
    pairs = make_pairs(num_prompts=2)
    result = embed_pairs(
        pairs, _config(tiny_bert, pooling="mean", normalize=True, output_dtype="float16")
    )
    features = result.features["features"]
    assert features.dtype == torch.float16
    torch.testing.assert_close(
        features.float().norm(dim=-1), torch.ones(features.shape[:2]), atol=1e-3, rtol=0
    )


def test_an_empty_pairs_table_gives_empty_features(tiny_llama):
    result = embed_pairs(make_pairs().iloc[:0], _config(tiny_llama))
    assert result.features["features"].shape == (0, 2, 32)
    assert result.features["pair_id"].shape == (0,)


def test_trust_remote_code_is_always_false(tiny_llama, monkeypatch):
    import transformers

    calls = []
    for cls in (transformers.AutoModel, transformers.AutoTokenizer):
        original = cls.from_pretrained

        def spy(*args, _original=original, **kwargs):
            calls.append(kwargs.get("trust_remote_code", "missing"))
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    embed_pairs(make_pairs(num_prompts=1), _config(tiny_llama))
    assert calls == [False, False]


def test_missing_model_folder_fails_before_loading_anything(tmp_path, monkeypatch):
    monkeypatch.setattr(core, "load_tokenizer", lambda *a: pytest.fail("tokenizer loaded"))
    missing = tmp_path / "models" / "llama"
    with pytest.raises(ConfigError, match=rf"'embedding\.hh\.model'.*{missing}.*does not exist"):
        embed_pairs(make_pairs(), _config(missing))


def test_cuda_without_cuda_fails_before_loading(tiny_llama, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(core, "load_tokenizer", lambda *a: pytest.fail("tokenizer loaded"))
    with pytest.raises(ConfigError, match=r"embedding\.hh\.device.*CUDA"):
        embed_pairs(make_pairs(), _config(tiny_llama, device="cuda"))


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda p: p.drop(columns="response_b"), r"'hh\.pairs'.*response_b"),
        (lambda p: p.assign(prompt=None), r"'hh\.pairs', column 'prompt'.*string"),
        (lambda p: p.assign(pair_id=0), r"'hh\.pairs', column 'pair_id'.*unique"),
    ],
)
def test_bad_pairs_tables_name_the_dataset_and_column(tiny_llama, change, needle, monkeypatch):
    monkeypatch.setattr(core, "load_tokenizer", lambda *a: pytest.fail("tokenizer loaded"))
    with pytest.raises(DataContractError, match=needle):
        embed_pairs(change(make_pairs()), _config(tiny_llama))


# --- resumable shards -------------------------------------------------------------------


def test_resuming_after_an_interruption_gives_the_same_result(tiny_llama, tmp_path):
    pairs = make_pairs(num_prompts=6, responses=4)  # 24 texts -> 5 shards of <= 5
    uninterrupted = embed_pairs(pairs, _config(tiny_llama, shard_size=5)).features
    shard_dir = tmp_path / "shards"
    config = _config(tiny_llama, shard_size=5, shard_dir=str(shard_dir))
    first = embed_pairs(pairs, config)
    assert first.stats.num_shards == 5 and first.stats.texts_embedded == 24
    shards = sorted(shard_dir.glob("shard-*.safetensors"))
    assert len(shards) == 5 and (shard_dir / "manifest.json").is_file()

    # a crash: the last two shards never written, one half-written temp file left,
    # and one shard truncated (as by a disk-full error)
    shards[3].unlink()
    shards[4].unlink()
    (shard_dir / ".shard-00003.safetensors.abc123.tmp").write_bytes(b"\x00" * 100)
    shards[1].write_bytes(shards[1].read_bytes()[:50])
    resumed = embed_pairs(pairs, config)
    assert resumed.stats.shards_reused == 2  # shards 0 and 2
    assert resumed.stats.texts_embedded == 24 - 10  # 3 shards redone, nothing else
    assert not list(shard_dir.glob(".*.tmp"))
    for result in (first.features, resumed.features):
        assert torch.equal(result["pair_id"], uninterrupted["pair_id"])
        assert torch.equal(result["features"], uninterrupted["features"])

    again = embed_pairs(pairs, config)  # all shards done: nothing is embedded
    assert again.stats.shards_reused == 5 and again.stats.texts_embedded == 0
    assert torch.equal(again.features["features"], uninterrupted["features"])


def test_shards_from_other_settings_are_never_reused(tiny_llama, tmp_path):
    pairs = make_pairs(num_prompts=4)
    shard_dir = str(tmp_path / "shards")
    embed_pairs(pairs, _config(tiny_llama, shard_size=4, shard_dir=shard_dir))
    mean = embed_pairs(
        pairs, _config(tiny_llama, shard_size=4, shard_dir=shard_dir, pooling="mean")
    )
    assert mean.stats.shards_reused == 0 and mean.stats.texts_embedded == 16
    fresh = embed_pairs(pairs, _config(tiny_llama, shard_size=4, pooling="mean"))
    assert torch.equal(mean.features["features"], fresh.features["features"])

    other_pairs = make_pairs(num_prompts=4, seed=9)  # other texts: other fingerprint
    changed = embed_pairs(
        other_pairs, _config(tiny_llama, shard_size=4, shard_dir=shard_dir, pooling="mean")
    )
    assert changed.stats.shards_reused == 0


def test_a_shard_with_a_foreign_header_is_recomputed(tiny_llama, tmp_path):
    pairs = make_pairs(num_prompts=2)
    shard_dir = tmp_path / "shards"
    config = _config(tiny_llama, shard_size=4, shard_dir=str(shard_dir))
    reference = embed_pairs(pairs, config).features
    other = tmp_path / "other"
    embed_pairs(pairs, _config(tiny_llama, shard_size=4, shard_dir=str(other), pooling="mean"))
    # copy a shard made with other settings over ours (same index, other numbers)
    (shard_dir / "shard-00000.safetensors").write_bytes(
        (other / "shard-00000.safetensors").read_bytes()
    )
    result = embed_pairs(pairs, config)
    assert result.stats.texts_embedded == 4
    assert torch.equal(result.features["features"], reference["features"])


def test_texts_another_dataset_embedded_are_copied_not_embedded(tiny_llama, monkeypatch):
    first = make_pairs(num_prompts=3, responses=4, seed=1)  # 3 x 4 distinct texts
    first_features = embed_pairs(first, _config(tiny_llama)).features
    known = KnownEmbeddings.from_features(first, first_features, "hh")
    assert known.table.shape == (12, 32)
    extra = make_pairs(num_prompts=2, responses=3, seed=9)  # 2 x 3 new texts
    extra["pair_id"] += 500
    second = pd.concat([first.iloc[:8], extra], ignore_index=True)
    alone = embed_pairs(second, _config(tiny_llama, name="hht")).features

    models = _counting(monkeypatch)
    result = embed_pairs(second, _config(tiny_llama, name="hht"), known=known)
    assert len(models[0].seen) == result.stats.texts_embedded == 6  # only the new texts
    features = result.features["features"]
    assert torch.equal(result.features["pair_id"], alone["pair_id"])
    assert torch.equal(features[:8], first_features["features"][:8])  # copied exactly
    torch.testing.assert_close(features, alone["features"], atol=1e-5, rtol=0)


def test_nothing_is_loaded_when_every_text_is_known(tiny_llama, monkeypatch):
    pairs = make_pairs(num_prompts=2, responses=3)
    features = embed_pairs(pairs, _config(tiny_llama)).features
    known = KnownEmbeddings.from_features(pairs, features, "hh")
    monkeypatch.setattr(core, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    result = embed_pairs(pairs.iloc[::-1].reset_index(drop=True), _config(tiny_llama), known=known)
    assert result.stats.texts_embedded == 0
    assert torch.equal(result.features["features"], features["features"].flip(0))


def test_known_embeddings_need_features_matching_their_pairs(tiny_llama):
    pairs = make_pairs(num_prompts=2, responses=3)
    features = {"pair_id": torch.tensor([1000, 77]), "features": torch.zeros(2, 2, 4)}
    with pytest.raises(DataContractError, match=r"'hh\.features'.*not in 'hh\.pairs'.*77"):
        KnownEmbeddings.from_features(pairs, features, "hh")
    features = {"pair_id": torch.tensor([1000, 1001]), "features": torch.zeros(2, 4)}
    with pytest.raises(DataContractError, match=r"'hh\.features'.*\(N, 2, D\)"):
        KnownEmbeddings.from_features(pairs, features, "hh")


def test_settings_that_change_the_values_are_compared(tiny_llama):
    base = _config(tiny_llama)
    assert differing_settings(base, _config(tiny_llama, name="hht", batch_tokens=4096)) == []
    changed = _config(tiny_llama, pooling="mean", max_length=32)
    assert differing_settings(base, changed) == ["pooling", "max_length"]
