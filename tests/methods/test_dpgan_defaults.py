"""DP-GAN's default clipping strategy is 'ghost'; 'vmap' stays selectable; typos are errors."""

import pytest

from dpgen_jax import errors
from tests import helpers


@pytest.mark.parametrize("name", helpers.configs_of("dpgan"))
def test_every_dpgan_config_defaults_to_ghost_clipping(name):
  for preset in ("paper", "cpu", "smoke"):
    assert helpers.config(name, preset).privacy.clipping_strategy == "ghost"


def test_vmap_is_selectable_and_an_unknown_strategy_is_one_clear_error():
  helpers.privacy_plan(helpers.config("mnist_eps10", "smoke",
                                      **{"privacy.clipping_strategy": "vmap"}))
  bad = helpers.config("mnist_eps10", "smoke", **{"privacy.clipping_strategy": "gost"})
  with pytest.raises(errors.ConfigError, match="clipping_strategy must be one of .*'gost'"):
    helpers.privacy_plan(bad)
