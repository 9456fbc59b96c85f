"""A profile loaded once: its runs, whether it publishes them, and its folders.

The sweep, the report and verification receive a ``Plan`` (``load_plan`` turns a profile's name or file into one,
and hands a ``Plan`` back as it is), so the profile file is read and checked once per command, and where a
profile's runs live is decided in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clipstudy import paths
from clipstudy.study import bundle, probes
from clipstudy.study.profiles import RunSpec, parse_profile


@dataclass(frozen=True)
class Plan:
    """A checked profile: ``name`` (its folders under ``reports/`` and ``results/``), the ``source`` file, its runs
    (``specs``, in the profile's order, each once), and whether it publishes them as a results bundle."""

    name: str
    source: Path
    specs: tuple[RunSpec, ...]
    publishes: bool

    @property
    def argument(self) -> str:
        """How a command line or a notebook's parameters name it: the name of a profile shipped with the package,
        else the path of its file."""
        shipped = (paths.PROFILES / f"{self.name}.yaml").resolve()
        return self.name if self.source.resolve() == shipped else str(self.source)

    @property
    def bundle(self) -> Path | None:
        """The published bundle (``results/<name>/``) of a publishing profile; None for the others."""
        return bundle.bundle_dir(self.name) if self.publishes else None

    def local(self, reports: str | Path | None = None) -> Path:
        """The profile's folder on this machine (``reports/<name>/``): the runs it trained, its report."""
        return Path(reports or paths.reports_dir()).resolve() / self.name

    def record(self, reports: str | Path | None = None) -> Path:
        """Where the profile's finished runs and probes are read from: its bundle if it publishes, else its folder
        on this machine (``runs/`` and ``probes/`` under it)."""
        return self.bundle or self.local(reports)

    def resolved(self, probes_dir: Path) -> list[RunSpec | None]:
        """Each planned run with a threshold from data read from its probe in ``probes_dir`` (its id then names the
        number); None for a run whose probe has not run yet."""
        return [probes.resolve(s, probes_dir) for s in self.specs]


def load_plan(profile: str | Path | Plan) -> Plan:
    """The profile (a name such as ``paper``, or a ``.yaml`` path) parsed and checked once; a ``Plan`` as it is.

    Raises:
      ProfileError: naming the file, the field and the reason.
    """
    if isinstance(profile, Plan):
        return profile
    source, specs, publish = parse_profile(profile)
    return Plan(source.stem, source, tuple(specs), publish)
