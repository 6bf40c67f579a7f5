"""Benchmark the bot's own overhead against the local fakes and print a table of results (issue #7).

    python -m bench                 # full run, production settings, ~7.5 minutes
    python -m bench --quick         # ~2 minutes: time scaled x0.2, 200 jobs instead of 1,000
    python -m bench -s ack -s quota # only some scenarios
    python -m bench --json out.json # also keep the raw measurements

Each scenario runs in two fresh processes: the fakes (``bench.fakes_server``: fake Discord + fake
RunComfy behind a control API) and the bot (``bench.botside``: the real AnimateBot plus the scenario
driver), so the fakes' CPU and memory never count against the bot. See README.md, "Benchmark".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCENARIO_ORDER = ("ack", "jobs", "load", "quota")


@dataclass(frozen=True)
class Profile:
    name: str
    scale: float
    params: dict[str, dict[str, Any]]


PROFILES = {
    "full": Profile(
        "full",
        1.0,
        {
            "ack": {"commands": 100},
            "jobs": {"short": 20, "long": 10, "jitter": 10.0},
            "load": {"jobs": 1000, "batch": 50, "batch_interval": 1.0, "duration": 90.0},
            "quota": {"commands": 200},
        },
    ),
    "quick": Profile(
        "quick",
        0.2,
        {
            "ack": {"commands": 100},
            "jobs": {"short": 20, "long": 10, "jitter": 10.0},
            "load": {"jobs": 200, "batch": 50, "batch_interval": 1.0, "duration": 90.0},
            "quota": {"commands": 200},
        },
    ),
    # For the smoke test: proves the harness works, measures nothing worth keeping.
    "tiny": Profile(
        "tiny",
        0.01,
        {
            "ack": {"commands": 5},
            "jobs": {"short": 2, "long": 1, "jitter": 10.0},
            "load": {"jobs": 20, "batch": 10, "batch_interval": 0.1, "duration": 90.0},
            "quota": {"commands": 12},
        },
    ),
}


def machine() -> dict[str, str]:
    model = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with open("/proc/meminfo", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    return {
        "cpus": str(len(os.sched_getaffinity(0))),
        "cpu_model": model,
        "memory": mem,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }


def run_scenario(name: str, profile: Profile, logdir: Path, python: str) -> dict[str, Any]:
    """Start the fakes' process, run the scenario in a fresh bot process, stop the fakes."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with open(logdir / f"{name}-fakes.log", "w") as fakes_log:
        fakes = subprocess.Popen(
            [python, "-m", "bench.fakes_server"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=fakes_log,
            text=True,
        )
        try:
            assert fakes.stdout is not None
            line = fakes.stdout.readline()
            if not line:
                raise RuntimeError(f"the fakes did not start; see {logdir / f'{name}-fakes.log'}")
            control = json.loads(line)["control"]
            started = time.monotonic()
            proc = subprocess.run(
                [
                    python,
                    "-m",
                    "bench.botside",
                    "--scenario",
                    name,
                    "--control",
                    control,
                    "--scale",
                    str(profile.scale),
                    "--params",
                    json.dumps(profile.params[name]),
                    "--log-file",
                    str(logdir / f"{name}-bot.log"),
                ],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"scenario {name} failed:\n{proc.stderr[-4000:]}")
            result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
            result["elapsed"] = time.monotonic() - started
            return result
        finally:
            fakes.terminate()
            try:
                fakes.wait(10)
            except subprocess.TimeoutExpired:
                fakes.kill()


# ------------------------------------------------------------------------------------------------ table


def ms(value: float | None) -> str:
    return "—" if value is None else f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def num(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


Row = tuple[str, str, str, str]  # figure, measured, target, verdict


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("PASS" if ok else "FAIL")


def rows_for(name: str, r: dict[str, Any], scale: float) -> list[Row]:
    m = r["metrics"]
    out: list[Row] = []
    if name == "ack":
        ack = m["ack_latency"]
        ok = ack["p99"] is not None and ack["p99"] < 0.25 and m["acked"] == m["commands"]
        out.append(
            (
                f"Ack latency, {m['commands']} /animate at once (p50 / p99 / max)",
                f"{ms(ack['p50'])} / {ms(ack['p99'])} / {ms(ack['max'])}",
                "p99 < 250 ms",
                verdict(ok),
            )
        )
        ans = m["answer_latency"]
        out.append(
            (
                "  time to the final ephemeral answer (p50 / p99)",
                f"{ms(ans['p50'])} / {ms(ans['p99'])}",
                "",
                "",
            )
        )
        out.append(("  jobs delivered", f"{m['delivered']} / {m['commands']}", "all", ""))
    elif name == "jobs":
        c60, c5 = m["classes"]["60s"], m["classes"]["5min"]
        lag = c60["delivery_lag"]
        label = "" if scale == 1 else f" (time x{scale:g}, lag in unscaled s)"
        out.append(
            (
                f"Delivery lag, {c60['jobs']} x 60 s jobs (median / p95 / max){label}",
                f"{num(lag['p50'], 2)} s / {num(lag['p95'], 2)} s / {num(lag['max'], 2)} s",
                "median < 3 s",
                verdict(lag["p50"] is not None and lag["p50"] < 3.0),
            )
        )
        lag5 = c5["delivery_lag"]
        out.append(
            (
                f"  delivery lag, {c5['jobs']} x 5 min jobs (median / p95)",
                f"{num(lag5['p50'], 2)} s / {num(lag5['p95'], 2)} s",
                "",
                "",
            )
        )
        for title, c, limit in (("60 s", c60, 25), ("5 min", c5, 45)):
            sc = c["status_calls"]
            out.append(
                (
                    f"Status calls per {title} job (mean / max)",
                    f"{num(sc['mean'])} / {num(sc['max'], 0)}",
                    f"<= {limit}",
                    verdict(sc["max"] is not None and sc["max"] <= limit),
                )
            )
        for title, c in (("60 s", c60), ("5 min", c5)):
            out.append(
                (
                    f"  status-message edits per {title} job (mean / max)",
                    f"{num(c['status_edits']['mean'])} / {num(c['status_edits']['max'], 0)}",
                    "",
                    "",
                )
            )
        d = m["discord"]
        kinds = ", ".join(f"{k} {v:.1f}" for k, v in d["by_kind_per_job"].items())
        out.append(("Discord calls per job (mix of 60 s and 5 min jobs)", num(d["per_job"]), "report", ""))
        out.append(("  by kind, per job", kinds, "", ""))
        out.append(
            (
                "  all jobs delivered",
                f"{m['delivered']} / {c60['jobs'] + c5['jobs']}",
                "all",
                verdict(m["delivered"] == c60["jobs"] + c5["jobs"]),
            )
        )
    elif name == "load":
        n = m["jobs"]
        out.append(
            (
                f"{n} jobs in flight: peak in flight / delivered",
                f"{m['peak_in_flight']} / {m['delivered']}",
                f"{n} / {n}",
                verdict(m["delivered"] == n and m["peak_in_flight"] == n),
            )
        )
        out.append(
            (
                "  resident memory of the bot process (idle -> peak)",
                f"{num(m['rss_idle_mib'])} -> {num(m['rss_peak_mib'])} MiB (VmHWM {num(m['rss_hwm_mib'])})",
                "< 250 MB",
                verdict(max(m["rss_hwm_mib"], m["rss_peak_mib"] or 0) * 1.048576 < 250),
            )
        )
        lag = m["loop_lag"]
        out.append(
            (
                "  event-loop lag (p50 / p99 / max)",
                f"{ms(lag['p50'])} / {ms(lag['p99'])} / {ms(lag['max'])}",
                "p99 < 100 ms",
                verdict(lag["p99"] is not None and lag["p99"] < 0.1),
            )
        )
        ack = m["ack_latency"]
        out.append(
            (
                f"  ack latency while loading, {m['submit_seconds']:.0f} s of commands (p99 / max)",
                f"{ms(ack['p99'])} / {ms(ack['max'])}",
                "",
                "",
            )
        )
        out.append(
            (
                "  bot CPU time per job",
                f"{m['bot_cpu_seconds'] / n * 1000:.1f} ms ({m['bot_cpu_seconds']:.1f} s total)",
                "",
                "",
            )
        )
        out.append(("  Discord calls per job", num(m["discord"]["per_job"]), "report", ""))
    elif name == "quota":
        q = m["quota"]
        out.append(
            (
                f"Quota race: {m['commands']} concurrent /animate, one user, {q} credits",
                f"{m['submitted']} submitted, {m['charged_jobs']} charged, "
                f"{m['out_of_credits_replies']} refused",
                f"exactly {q} jobs",
                verdict(
                    m["submitted"] == q
                    and m["charged_jobs"] == q
                    and m["out_of_credits_replies"] == m["commands"] - q
                ),
            )
        )
        ack = m["ack_latency"]
        out.append(
            (
                f"  ack latency, {m['commands']} at once (p99 / max)",
                f"{ms(ack['p99'])} / {ms(ack['max'])}",
                "",
                "",
            )
        )
    return out


def table(rows: list[Row]) -> str:
    header: Row = ("figure", "measured", "target", "result")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]

    def line(r: Row) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def settings_line(results: dict[str, dict[str, Any]]) -> str:
    for r in results.values():
        s = r["metrics"]["settings"]
        return (
            f"poll_first_delay={s['poll_first_delay']:g} s, poll_max_interval={s['poll_max_interval']:g} s, "
            f"poll_backoff_ratio=1/{1 / s['poll_backoff_ratio']:.3g}, "
            f"status_edit_interval={s['status_edit_interval']:g} s"
        )
    return ""


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else None
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", dest="profile", const="quick", help="~2 min smoke run")
    mode.add_argument("--tiny", action="store_const", dest="profile", const="tiny", help="seconds; for tests")
    parser.add_argument(
        "-s", "--scenario", action="append", choices=SCENARIO_ORDER, help="run only these (repeatable)"
    )
    parser.add_argument("--json", type=Path, help="write the raw measurements here")
    parser.add_argument("--logs", type=Path, help="folder for the bot's and the fakes' logs (default: temp)")
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile or "full"]
    chosen = [s for s in SCENARIO_ORDER if not args.scenario or s in args.scenario]

    logdir = args.logs or Path(tempfile.mkdtemp(prefix="animate-bench-logs-"))
    logdir.mkdir(parents=True, exist_ok=True)
    info = machine()
    out(
        f"# animate-bot benchmark ({profile.name}"
        + ("" if profile.scale == 1 else f"; time scaled x{profile.scale:g}")
        + ")"
    )
    out(
        f"machine: {info['cpus']} CPUs ({info['cpu_model']}), {info['memory']} RAM, "
        f"Python {info['python']}, {info['os']}"
    )
    out(f"logs: {logdir}")
    results: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    for name in chosen:
        out(f"... {name}")
        results[name] = run_scenario(name, profile, logdir, sys.executable)
    rows = [row for name in chosen for row in rows_for(name, results[name], profile.scale)]
    out("")
    out(
        "settings: production defaults from bot/settings.py"
        + ("" if profile.scale == 1 else f" with durations x{profile.scale:g}")
        + f": {settings_line(results)}; daily_quota 1000 except in the quota race (5)"
    )
    out("")
    out(table(rows))
    out("")
    failed = [r for r in rows if r[3] == "FAIL"]
    out(f"{len(failed)} target(s) missed; total {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps({"machine": info, "profile": profile.name, "results": results}, indent=2)
        )
    return 1 if failed else 0


if __name__ == "__main__":
    if __package__ in (None, ""):  # `python bench/run.py`
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
