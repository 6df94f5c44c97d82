"""``ecgbridge serve``: run the hospital daemon (inbox + DICOM SCP -> digitize -> deliver)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    """Add the ``serve`` sub-command."""
    p: argparse.ArgumentParser = sub.add_parser(
        "serve",
        help="run the daemon: watch a folder and a DICOM port, deliver digitized ECGs",
        description="Run the ecgbridge daemon. Without a configuration file it watches ./inbox, "
        "listens for DICOM on 127.0.0.1:11112 as ECGBRIDGE, writes to ./outbox and keeps its "
        "journal in ./state. Precedence: flags > ECGBRIDGE_SECTION__KEY environment variables "
        "> YAML file > defaults. Stops gracefully on SIGTERM.",
    )
    p.add_argument("--config", "-c", type=Path, default=None,
                   help="YAML configuration file (default: $ECGBRIDGE_CONFIG, else none)")
    p.add_argument("--inbox", type=Path, default=None, help="folder to watch (inbox.path)")
    p.add_argument("--outbox", type=Path, default=None,
                   help="output folder (deliver.outbox.path)")
    p.add_argument("--state", type=Path, default=None, help="state folder (state.path)")
    p.add_argument("--dicom-port", type=int, default=None, help="DICOM listener port (dicom.port)")
    p.add_argument("--dicom-host", default=None, help="DICOM bind address (dicom.host)")
    p.add_argument("--ae-title", default=None, help="our AE title (dicom.ae_title)")
    p.add_argument("--http-port", type=int, default=None,
                   help="health/metrics HTTP port (http.port)")
    p.add_argument("--workers", type=int, default=None,
                   help="digitization processes (workers.processes)")
    p.add_argument("--json-logs", action="store_true", default=None,
                   help="log one JSON object per line (logging.json_format)")
    p.add_argument("--print-config", action="store_true",
                   help="print the effective configuration as YAML and exit")
    p.set_defaults(func=run)


def cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Dotted configuration keys set by the flags (None = not given)."""
    return {
        "inbox.path": args.inbox,
        "deliver.outbox.path": args.outbox,
        "state.path": args.state,
        "dicom.port": args.dicom_port,
        "dicom.host": args.dicom_host,
        "dicom.ae_title": args.ae_title,
        "http.port": args.http_port,
        "workers.processes": args.workers,
        "logging.json_format": args.json_logs,
    }


def run(args: argparse.Namespace) -> int:
    """Load the settings and run the daemon until SIGTERM."""
    from ecgbridge.config import load_settings, settings_to_yaml

    overrides = {k: (str(v) if isinstance(v, Path) else v) for k, v in cli_overrides(args).items()}
    settings = load_settings(args.config, overrides=overrides)
    if args.print_config:
        print(settings_to_yaml(settings), end="")
        return 0
    from ecgbridge.errors import ConfigError
    from ecgbridge.service.daemon import Daemon
    from ecgbridge.service.logs import configure_logging

    configure_logging(
        settings.logging.level, settings.logging.json_format,
        settings.logging.include_patient_ids,
    )
    fresh = not Path(settings.state.path).exists()
    try:
        return Daemon(settings).run()
    except ConfigError:
        if fresh:  # a start that failed (port in use...) leaves no empty state folder behind
            import shutil

            shutil.rmtree(settings.state.path, ignore_errors=True)
        raise
