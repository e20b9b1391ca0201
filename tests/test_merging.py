"""Task arithmetic (`models.merging`): the merged weights are target + share x (donor - base), exactly."""

import pytest
import torch
from torch import nn

from vocolab.models.merging import task_arithmetic


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()
        net[1].running_mean.normal_()
        net[1].running_var.uniform_(0.5, 2.0)
    net[1].num_batches_tracked.fill_(seed + 1)
    return net


def test_merged_weights_are_target_plus_a_share_of_the_donors_move():
    base, donor, target = _net(0), _net(1), _net(2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    merged = task_arithmetic(target, donor, base, 0.5)
    b, d, m = base.state_dict(), donor.state_dict(), merged.state_dict()
    for k, v in before.items():
        if v.is_floating_point():
            torch.testing.assert_close(m[k], v + 0.5 * (d[k] - b[k]), rtol=0, atol=0)
            assert not torch.equal(m[k], v)
        else:  # an integer buffer (the batch count) stays the target's
            assert torch.equal(m[k], v)
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in before.items())  # target untouched
    same = task_arithmetic(target, base, base, 1.0)  # no move: the target's weights
    assert all(torch.equal(v, same.state_dict()[k]) for k, v in before.items())


def test_merging_models_of_other_shapes_or_a_share_of_zero_is_refused():
    base, donor = _net(0), _net(1)
    with pytest.raises(ValueError, match="donor and target differ"):
        task_arithmetic(base, nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5)), base, 0.5)
    with pytest.raises(ValueError, match="base and target differ"):
        task_arithmetic(donor, donor, nn.Linear(3, 4), 0.5)
    with pytest.raises(ValueError, match="scale must be > 0"):
        task_arithmetic(donor, donor, base, 0.0)
