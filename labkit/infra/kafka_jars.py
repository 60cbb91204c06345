"""Find a JVM and Apache Kafka's jars: $KAFKA_HOME, else a Maven-resolved cache, else the tarball."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from labkit.infra.errors import InfraError
from labkit.infra.progress import QUIET, Progress

MIN_JAVA = 17
JAVA_HINT = "apt-get install -y openjdk-17-jre-headless"
POM = Path(__file__).with_name("kafka-pom.xml")
MARKER = ".labkit-complete"
TARBALL_URLS = (
    "https://downloads.apache.org/kafka/{v}/kafka_2.13-{v}.tgz",
    "https://archive.apache.org/dist/kafka/{v}/kafka_2.13-{v}.tgz",
)
_JAR_VERSION = re.compile(r"^kafka_2\.\d+-(\d[\w.\-]*)\.jar$")


def java_binary() -> str:
    """The java to run Kafka with; fails with an install hint if missing or older than 17."""
    java = shutil.which("java")
    if java is None:
        raise InfraError(f"java not found: Kafka needs Java {MIN_JAVA}+; run `{JAVA_HINT}`")
    major = java_major(java)
    if major is not None and major < MIN_JAVA:
        raise InfraError(
            f"{java} is Java {major}; Kafka 4 needs Java {MIN_JAVA}+: run `{JAVA_HINT}` "
            "and put it first on PATH"
        )
    return java


def java_major(java: str) -> int | None:
    done = subprocess.run(
        [java, "-version"], check=False, capture_output=True, text=True, timeout=30
    )
    return parse_java_major(done.stderr + done.stdout)


def parse_java_major(text: str) -> int | None:
    """'version "1.8.0_392"' -> 8, 'version "17.0.15"' -> 17, 'version "21"' -> 21."""
    found = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if not found:
        return None
    first = int(found.group(1))
    return int(found.group(2) or 0) if first == 1 else first


def cache_dir(version: str, *, env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return base / "labkit" / f"kafka-{version}" / "libs"


def jar_version(libs: Path) -> str | None:
    """The Kafka version actually in use, read off the broker jar's file name."""
    for jar in sorted(libs.glob("kafka_2.*-*.jar")):
        found = _JAR_VERSION.match(jar.name)
        if found and not any(s in jar.name for s in ("-test", "-sources", "-javadoc")):
            return found.group(1)
    return None


def needs_download(version: str, *, env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return not env.get("KAFKA_HOME") and not _complete(cache_dir(version, env=env))


def _pom_digest() -> str:
    # The marker records which pom filled the cache: a changed dependency list refills it.
    return hashlib.sha256(POM.read_bytes()).hexdigest()[:16]


def _complete(libs: Path) -> bool:
    marker = libs / MARKER
    return marker.exists() and marker.read_text().strip() == _pom_digest()


def resolve_libs(
    version: str, *, env: Mapping[str, str] | None = None, progress: Progress = QUIET
) -> Path:
    """A directory of jars to put on the classpath as DIR/*."""
    env = os.environ if env is None else env
    kafka_home = env.get("KAFKA_HOME")
    if kafka_home:
        libs = Path(kafka_home).expanduser() / "libs"
        if jar_version(libs) is None:
            raise InfraError(
                f"KAFKA_HOME={kafka_home} has no libs/kafka_2.13-*.jar; unset it or fix it"
            )
        return libs
    libs = cache_dir(version, env=env)
    if _complete(libs):
        return libs
    errors: list[str] = []
    mvn = shutil.which("mvn")
    if mvn:
        progress.doing(f"resolving Kafka {version} jars with mvn (once; cached in {libs.parent})")
        try:
            _fill(libs, lambda tmp: _maven_copy(mvn, version, tmp))
            return libs
        except InfraError as exc:
            errors.append(str(exc))
    else:
        errors.append("no `mvn` (apt-get install -y maven)")
    progress.doing(f"downloading the Kafka {version} tarball (once; cached in {libs.parent})")
    try:
        _fill(libs, lambda tmp: _tarball_copy(version, tmp))
        return libs
    except InfraError as exc:
        errors.append(str(exc))
    raise InfraError(
        f"cannot get Kafka {version} jars: {'; '.join(errors)}. "
        "Fix: `apt-get install -y maven`, or set KAFKA_HOME to an unpacked Kafka distribution"
    )


def _fill(libs: Path, copy) -> None:
    """Copy into a temp dir next to the cache, then rename: a crash never leaves half a cache."""
    libs.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="libs-", dir=libs.parent))
    try:
        copy(tmp)
        if jar_version(tmp) is None:
            raise InfraError(f"no kafka_2.13 jar after download into {tmp}")
        (tmp / MARKER).write_text(_pom_digest() + "\n")
        if libs.exists():
            shutil.rmtree(libs)
        tmp.rename(libs)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _maven_copy(mvn: str, version: str, out: Path) -> None:
    cmd = [
        mvn, "-q", "-B", "-f", str(POM), f"-Dkafka.version={version}",
        "dependency:copy-dependencies", f"-DoutputDirectory={out}", "-DincludeScope=runtime",
    ]  # fmt: skip
    try:
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise InfraError("mvn took over 600 s resolving Kafka from Maven Central") from None
    if done.returncode != 0:
        lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
        last = next((ln for ln in reversed(lines) if "ERROR" in ln), lines[-1] if lines else "?")
        raise InfraError(f"mvn could not resolve kafka_2.13:{version}: {last.strip()}")


def _tarball_copy(version: str, out: Path) -> None:
    reasons = []
    for template in TARBALL_URLS:
        url = template.format(v=version)
        try:
            with tempfile.TemporaryFile() as tgz:
                with urllib.request.urlopen(url, timeout=20) as resp:
                    shutil.copyfileobj(resp, tgz)
                with urllib.request.urlopen(url + ".sha512", timeout=20) as resp:
                    verify_sha512(tgz, resp.read().decode("ascii", "replace"), name=url)
                tgz.seek(0)
                with tarfile.open(fileobj=tgz, mode="r:gz") as tar:
                    for member in tar.getmembers():
                        parts = Path(member.name).parts
                        if len(parts) == 3 and parts[1] == "libs" and member.isfile():
                            member.name = parts[2]
                            tar.extract(member, out, filter="data")
            return
        except (OSError, tarfile.TarError, ValueError) as exc:  # try the next source
            reasons.append(f"{url}: {exc}")
    raise InfraError("download failed (" + "; ".join(reasons) + ")")


def published_sha512(text: str) -> str:
    """The digest in an Apache `.sha512` file: `gpg --print-md` style (`name: ABCD EF01 …`
    over several lines) or `sha512sum` style (`abcd…  name`)."""
    body = text.split(":", 1)[1] if ":" in text else (text.split() or [""])[0]
    hex_only = "".join(re.findall(r"[0-9A-Fa-f]+", body))
    if len(hex_only) != 128:
        raise ValueError(f"no SHA-512 digest in the published checksum ({text[:60]!r})")
    return hex_only.lower()


def verify_sha512(fileobj, published: str, *, name: str) -> None:
    """Refuse a download whose SHA-512 differs from the one Apache publishes beside it."""
    fileobj.seek(0)
    digest = hashlib.sha512()
    for chunk in iter(lambda: fileobj.read(1 << 20), b""):
        digest.update(chunk)
    if digest.hexdigest() != published_sha512(published):
        raise ValueError(f"{name}: SHA-512 does not match the published checksum; not used")
