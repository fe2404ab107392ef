"""Two gloo processes, each with half of the batch, keep the same statistics as one process
with the whole batch (the official Seesaw and DropLoss code would not)."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from longtail_d2.modeling.losses import DropLoss, EQLv2Loss, SeesawLoss
from longtail_d2.modeling.fasa import FeatureStatistics
from longtail_d2.modeling.pcb import PairwiseConfusion

C = 5
TAIL = torch.tensor([False, True, True, False, True])


def batches(steps=3, rois=24):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(steps):
        gt = torch.randint(0, C + 1, (rois,), generator=g)
        # An uneven split of tail / head foreground between the two halves.
        gt[: rois // 2] = torch.where(gt[: rois // 2] < C, gt[: rois // 2] % 2 + 1, gt[: rois // 2])
        out.append((torch.randn(rois, C + 2, generator=g), gt))
    return out


def run(modules, parts):
    """Feeds each step's slice to the modules; returns their buffers and DropLoss's rho."""
    ratios = []
    for logits, gt in parts:
        modules["eqlv2"](logits[:, : C + 1], gt)
        modules["seesaw"](logits, gt)
        modules["drop"](logits[:, :C], gt)
        ratios.append(modules["drop"].last_ratio)
        fg = gt < C
        modules["pcb"].update(torch.softmax(logits[fg, :C], dim=1), gt[fg])
        modules["fasa"].update(logits[fg], gt[fg])  # the logits stand in for RoI features
    state = {f"{k}.{n}": v.clone() for k, m in modules.items() for n, v in m.state_dict().items()}
    return state, ratios


def new_modules():
    mods = {
        "eqlv2": EQLv2Loss(num_classes=C),
        "seesaw": SeesawLoss(num_classes=C),
        "drop": DropLoss(num_classes=C, tail_mask=TAIL),
        "pcb": PairwiseConfusion(C, momentum=0.9),
        "fasa": FeatureStatistics(C, C + 2),
    }
    for m in mods.values():
        m.train()
    return mods


def _worker(rank, init_file, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    half = [(z.chunk(2)[rank], y.chunk(2)[rank]) for z, y in batches()]
    state, ratios = run(new_modules(), half)
    if rank == 0:
        torch.save((state, ratios), out_file)
    dist.barrier()
    dist.destroy_process_group()


def test_two_processes_equal_one(tmp_path):
    out_file = str(tmp_path / "ddp.pth")
    mp.start_processes(
        _worker, args=(str(tmp_path / "init"), out_file), nprocs=2, start_method="spawn"
    )
    ddp_state, ddp_ratios = torch.load(out_file)
    state, ratios = run(new_modules(), batches())
    assert ratios == ddp_ratios
    assert 0 < ratios[0] < 1
    for name, value in state.items():
        torch.testing.assert_close(ddp_state[name], value, rtol=1e-6, atol=1e-6, msg=name)
    assert state["eqlv2.pos_grad"].sum() > 0 and state["seesaw.cum_samples"].sum() > 0
    assert state["pcb.matrix"].sum() > 0 and state["fasa.var"].sum() > 0


def test_collective_is_a_no_op_in_one_process():
    """In one process the helper returns a copy of its input, so each module's statistics are
    the plain sums over the steps, computed here by hand."""
    from longtail_d2.modeling.distributed import all_reduce_sum

    assert not (dist.is_available() and dist.is_initialized())
    x = torch.tensor([1.0, -2.0, 3.5])
    y = all_reduce_sum(x)
    assert torch.equal(y, x) and y.data_ptr() != x.data_ptr()
    steps = batches(steps=2)
    state, ratios = run(new_modules(), steps)
    counts = sum(torch.bincount(gt, minlength=C + 1)[:C].float() for _, gt in steps)
    assert torch.equal(state["seesaw.cum_samples"], counts)
    for (_, gt), ratio in zip(steps, ratios):
        fg = gt[gt < C]
        assert ratio == TAIL[fg].sum().item() / len(fg)  # rho of the whole (one-process) batch
    assert os.environ.get("RANK") is None
