"""Flower's simulation engine (``flwr[simulation]``, Ray) running the project's ClientApp/ServerApp against the
in-process :class:`~lightning_addons.federated.FederatedSimulation` of the same config: same sampled clients, same
final global state? Wall time, CPU seconds and peak memory of each engine, whole process trees (Ray's included).

Needs Ray: the ``fl-sim`` extra (part of ``all``) installs ``flwr[simulation]`` (ray 2.55.1 and jsonschema). Run
from the repository root:

    OMP_NUM_THREADS=1 python benchmarks/flower_ray.py --clients 2 --rounds 2 --workdir /tmp/flower_ray
    OMP_NUM_THREADS=1 python benchmarks/flower_ray.py --task cachefl --world tiny-unet \\
        --clients 1000 --fraction 0.1 --rounds 5 --workdir /tmp/flower_ray_1000

Tasks: ``digits`` (FedAvg of a LeNet-5 on digits images) and ``cachefl`` (the CacheFL cache model trained on
cached CLIP features: a feature world file, see ``lightning_addons.experiments.save_feature_world``; ``--world
tiny-unet`` is the CacheFL experiment's world (cache from the tiny UNet, fidelity filter on, about a minute to
build), ``--world digits-shots`` a cheaper one (cache from 2 real training images per class); the training
features are resampled with small jitter to ``--samples-per-client`` per client and split by Dirichlet(``--alpha``)
as in ``benchmarks/federated_scale.py``).

Each engine runs in its own child process (one at a time) while this process samples the memory of the child's
whole process tree every 0.25 s (for Flower: the driver running the ServerApp, Ray's GCS/raylet/agents and its
ClientApp actors): peak of the summed RSS (counts shared pages once per process: an upper bound) and of the
summed PSS (shared pages split between the processes sharing them). CPU seconds are user+system of every process
of the tree (last sample of each, plus the child's own total at exit). Wall time includes process start and
imports, and for Flower Ray's start and shutdown; ``run s`` leaves out the child's start and imports (in-process:
building the simulation and fitting; Flower: ``run_simulation`` from Ray's start to its shutdown).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, ".")  # run from the repository root without installing
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network: Ray would report usage statistics
# Ray lowers its workers' priority by 15 nice levels: on a busy shared machine that starves the ClientApp actors
# (measured: about 5% of a core each at load 12); run them at the driver's priority, like the in-process clients.
os.environ.setdefault("RAY_worker_niceness", "0")


# ---------------------------------------------------------------------------------------------------- stages
def stage_world(args) -> None:
    """Build the feature world file of the ``cachefl`` task."""
    import torch
    import torch.nn.functional as F

    from lightning_addons.experiments import save_feature_world

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if args.world == "tiny-unet":
        from lightning_addons.experiments import build_world

        adapter, feats, _ = build_world(shots=16)
    else:  # digits-shots: the tiny CLIP's features of digits, a cache of 2 real training images per class
        from lightning_addons.data import load_digits_arrays
        from lightning_addons.modules import CacheCLIPAdapter

        images, labels = load_digits_arrays()
        torch.manual_seed(0)
        adapter = CacheCLIPAdapter()
        x = adapter.encode_images(torch.from_numpy(images).unsqueeze(1))
        y = torch.from_numpy(labels).long()
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        n_val = n_test = len(x) * 15 // 100
        idx = {"val": perm[:n_val], "test": perm[n_val : n_val + n_test], "train": perm[n_val + n_test :]}
        feats = {s: (x[i], y[i]) for s, i in idx.items()}
        tr_y = feats["train"][1]
        shots = torch.cat([torch.nonzero(tr_y == c).flatten()[:2] for c in range(10)])
        adapter.set_cache(feats["train"][0][shots], tr_y[shots])
    x0, y0 = feats["train"]
    n = args.clients * args.samples_per_client
    g = torch.Generator().manual_seed(0)
    pick = torch.randint(len(x0), (n,), generator=g)
    x = F.normalize(x0[pick] + args.jitter * torch.randn(n, x0.shape[1], generator=g), dim=-1)
    save_feature_world(args.world_path, adapter, {**feats, "train": (x, y0[pick])})
    print(f"world {args.world}: {n} training features, built in {time.perf_counter() - t0:.1f} s", flush=True)


def stage_inprocess(args) -> None:
    import torch

    from lightning_addons.federated.config import build_simulation, load_config

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    sim = build_simulation(load_config(args.config), progress_bar=False, checkpoint_dir=None)
    torch.save(sim.global_state, args.work / "initial.pt")
    res = sim.fit()
    torch.save(res.global_state, args.work / "inprocess.pt")
    out = {
        "sampled": [sim.sample_clients(r) for r in range(sim.rounds)],
        "trained": [h["clients"] for h in res.history],
        "test": res.test_metrics,
        "run_s": time.perf_counter() - t0,
    }
    (args.work / "inprocess.json").write_text(json.dumps(out))


def stage_flower(args) -> None:
    import torch
    from flwr.simulation import run_simulation

    from lightning_addons.federated.flower import make_client_app, make_server_app

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    run_config = {
        "config-path": str(args.config),
        "result-path": str(args.work / "flower.json"),
        "num-server-rounds": args.rounds,
    }
    run_simulation(
        make_server_app(run_config),
        make_client_app(run_config),
        num_supernodes=args.clients,
        backend_config={
            "client_resources": {"num_cpus": args.client_cpus, "num_gpus": 0.0},
            "init_args": {
                "num_cpus": args.cpus,
                "include_dashboard": False,
                "object_store_memory": args.object_store_mib * 2**20,
            },
        },
    )
    import ray

    if ray.is_initialized():
        ray.shutdown()
    (args.work / "flower_run.json").write_text(json.dumps({"run_s": time.perf_counter() - t0}))


# ---------------------------------------------------------------------------------------------------- parent
def measure(cmd: list[str], log_path: Path, env: dict) -> dict:
    """Run ``cmd``; sample its process tree's memory and CPU until it exits."""
    import psutil

    peak = {"rss": 0, "pss": 0, "procs": 0}
    cpu: dict[int, float] = {}
    seen: dict[int, float] = {}  # pid -> create time (to tell a survivor from a reused pid)
    with open(log_path, "w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        root = psutil.Process(proc.pid)
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                try:
                    procs = [root, *root.children(recursive=True)]
                except psutil.Error:
                    break
                rss = pss = 0
                for p in procs:
                    try:
                        with p.oneshot():
                            mem = p.memory_full_info()
                            t = p.cpu_times()
                        rss, pss = rss + mem.rss, pss + getattr(mem, "pss", mem.rss)
                        cpu[p.pid] = t.user + t.system
                        seen[p.pid] = p.create_time()
                    except psutil.Error:
                        continue
                peak["rss"], peak["pss"] = max(peak["rss"], rss), max(peak["pss"], pss)
                peak["procs"] = max(peak["procs"], len(procs))
                done.wait(0.25)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        rc = proc.wait()
        wall = time.perf_counter() - t0
        done.set()
        thread.join()
    if rc != 0:
        sys.exit(f"{' '.join(cmd)} failed ({rc}):\n{log_path.read_text()[-4000:]}")

    def survivors() -> list[str]:  # processes of the tree still running (zombies are gone but for their pid)
        out = []
        for pid, created in seen.items():
            try:
                p = psutil.Process(pid)
                if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(f"{pid} {' '.join(p.cmdline())[:80]}")
            except psutil.Error:
                continue
        return out

    deadline = time.monotonic() + 15  # let the tree's daemons finish exiting
    while (left := survivors()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return {
        "processes_left": left,
        "wall_s": wall,
        "tree_cpu_s": sum(cpu.values()),
        "peak_rss_mib": peak["rss"] / 2**20,
        "peak_pss_mib": peak["pss"] / 2**20,
        "max_processes": peak["procs"],
    }


def write_config(args) -> None:
    import yaml

    fed = {
        "num_clients": args.clients,
        "rounds": args.rounds,
        "local_epochs": 1,
        "fraction_fit": args.fraction,
    }
    if args.task == "digits":
        cfg = {
            "seed": args.seed,
            "model": {
                "class_path": "ImageClassifier",
                "init_args": {"model": {"class_path": "LeNet5", "init_args": {"width": 0.5}}, "lr": 0.003},
            },
            "data": {"class_path": "DigitsDataModule", "init_args": {"resize": 32}},
            "federation": {**fed, "partition": "iid"},
        }
    else:
        world = {"path": str(args.world_path)}
        cfg = {
            "seed": args.seed,
            "model": {"class_path": "lightning_addons.experiments.feature_world_adapter", "init_args": world},
            "data": {
                "class_path": "lightning_addons.experiments.CachedFeaturesDataModule",
                "init_args": world,
            },
            "federation": {
                **fed,
                "partition": "dirichlet",
                "alpha": args.alpha,
                "min_size": 2,
                "batch_size": 32,
                "evaluate_every": args.rounds,
            },
        }
    args.config.write_text(yaml.safe_dump(cfg))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=["digits", "cachefl"], default="digits")
    p.add_argument("--clients", type=int, default=2, help="clients = Flower virtual SuperNodes")
    p.add_argument("--fraction", type=float, default=1.0, help="fraction of clients sampled per round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--world", choices=["digits-shots", "tiny-unet"], default="digits-shots")
    p.add_argument("--samples-per-client", type=int, default=20)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--jitter", type=float, default=0.05)
    p.add_argument("--workdir", default="/tmp/flower_ray")
    p.add_argument("--cpus", type=int, default=2, help="CPUs Ray may use")
    p.add_argument(
        "--client-cpus", type=float, default=1.0, help="CPUs per ClientApp actor (actors = cpus / this)"
    )
    p.add_argument("--object-store-mib", type=int, default=256, help="Ray's object store size")
    p.add_argument("--quick", action="store_true", help="2 clients, 1 round")
    p.add_argument("--stage", choices=["world", "inprocess", "flower"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.clients, args.rounds = 2, 1
    if not 0 < args.fraction <= 1:
        p.error(f"--fraction must be in (0, 1], got {args.fraction}")
    args.work = Path(args.workdir).resolve()
    args.config, args.world_path = args.work / "fl.yaml", args.work / "world.pt"
    if args.stage:
        {"world": stage_world, "inprocess": stage_inprocess, "flower": stage_flower}[args.stage](args)
        return {}
    try:
        import ray
    except ModuleNotFoundError:
        sys.exit('Ray is not installed: pip install "lightning-addons[fl-sim]" (flwr[simulation]).')

    args.work.mkdir(parents=True, exist_ok=True)
    for name in (
        "flower.json",
        "flower.pt",
        "flower_run.json",
        "inprocess.json",
        "inprocess.pt",
        "initial.pt",
    ):
        (args.work / name).unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path.cwd()), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    base = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:])]
    print(f"# {' '.join(['python', *sys.argv])}\n# ray {ray.__version__}, {os.cpu_count()} CPUs", flush=True)
    write_config(args)
    if args.task == "cachefl":
        measure([*base, "--stage", "world"], args.work / "world.log", env)
    local = measure([*base, "--stage", "inprocess"], args.work / "inprocess.log", env)
    flower = measure([*base, "--stage", "flower"], args.work / "flower.log", env)

    import torch

    leftovers = flower["processes_left"]
    final = torch.load(args.work / "flower.pt", weights_only=True)
    ref = torch.load(args.work / "inprocess.pt", weights_only=True)
    fres = json.loads((args.work / "flower.json").read_text())
    lres = json.loads((args.work / "inprocess.json").read_text())
    local["run_s"] = lres["run_s"]  # build + fit, imports excluded
    flower["run_s"] = json.loads((args.work / "flower_run.json").read_text())[
        "run_s"
    ]  # Ray start to shutdown
    flower["strategy_s"] = fres["seconds"]  # partition query + rounds + evaluations
    diff = max(float((final[k] - ref[k]).abs().max()) for k in ref)
    equal = sorted(final) == sorted(ref) and all(torch.equal(final[k], ref[k]) for k in ref)
    initial = torch.load(args.work / "initial.pt", weights_only=True)
    out = {
        "task": args.task,
        "clients": args.clients,
        "rounds": args.rounds,
        "fraction": args.fraction,
        "equal_final_state": equal,
        "max_abs_diff": diff,
        "changed_from_initial": any(not torch.equal(final[k], initial[k]) for k in initial),
        "equal_sampled": fres["sampled"] == lres["sampled"],
        "equal_trained": fres["trained"] == lres["trained"],
        "sampled": fres["sampled"],
        "in_process_sampled": lres["sampled"],
        "ray_test": fres["test"],
        "in_process_test": lres["test"],
        "ray": flower,
        "in_process": local,
        "ray_processes_left": len(leftovers),
        # kept for older readers of this JSON line
        "ray_wall_s": flower["wall_s"],
        "in_process_wall_s": local["wall_s"],
    }
    print(json.dumps(out), flush=True)
    print(
        f"{args.task}: {args.clients} clients x {args.rounds} rounds, {args.fraction:g} sampled per round\n"
        f"{'engine':<12}{'wall s':>9}{'run s':>8}{'CPU s':>9}{'peak RSS MiB':>14}{'peak PSS MiB':>14}{'processes':>11}\n"
        + "\n".join(
            f"{name:<12}{r['wall_s']:9.1f}{r['run_s']:8.1f}{r['tree_cpu_s']:9.1f}{r['peak_rss_mib']:14.0f}"
            f"{r['peak_pss_mib']:14.0f}{r['max_processes']:11d}"
            for name, r in (("in-process", local), ("Flower/Ray", flower))
        )
        + f"\nFlower/Ray vs in-process: wall {flower['wall_s'] / local['wall_s']:.1f}x, CPU "
        f"{flower['tree_cpu_s'] / max(local['tree_cpu_s'], 1e-9):.1f}x, peak PSS "
        f"{flower['peak_pss_mib'] / local['peak_pss_mib']:.1f}x; final states equal: {equal} (max |diff| {diff:g}); "
        f"sampled clients equal: {out['equal_sampled']}; Ray processes left: {len(leftovers)}",
        flush=True,
    )
    return out


if __name__ == "__main__":
    main()
