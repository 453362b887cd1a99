"""The in-process harness the experiments share: arms, run sizes, the lab engine with its fault hooks, GRPO's pieces.

verl's actor engine (``aggc_fsdp2`` with fault hooks, :mod:`~aggc_rl.inprocess.engine`) at world size 1, in
this process, without Ray: built from our primary config as the trainer builds it (:mod:`~aggc_rl.inprocess.loop`),
for an arm (:mod:`~aggc_rl.inprocess.arms`: a rule with its knobs and guard) at a size
(:mod:`~aggc_rl.inprocess.size`). The proxy's runs, the learning-rate sweep and the fault lab all stand on it.
"""
