#!/usr/bin/env bash
# Installs and checks everything oncesync's demo, tests and benchmark need on a fresh machine of
# this kind: Go modules, a Java runtime for the emulators, the Firestore and Pub/Sub emulators,
# terraform for the offline checks, spin for the protocol model and Chromium for the trace page's
# browser test. Idempotent; prints what it found.
set -euo pipefail
cd "$(dirname "$0")/../.."

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }
apt_install() {
	if [ "$(id -u)" != 0 ]; then die "need root to apt-get install $*"; fi
	if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq >/dev/null || true; APT_UPDATED=1; fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

command -v go >/dev/null || die "go is not installed (expected at /usr/local/go/bin/go on this machine kind)"
say "$(go version)"

command -v make >/dev/null || apt_install make
command -v java >/dev/null || { say "installing a Java runtime for the emulators"; apt_install openjdk-17-jre-headless; }
say "java: $(java -version 2>&1 | head -n1)"

sdk=""
if command -v gcloud >/dev/null; then sdk=$(gcloud info --format='value(installation.sdk_root)' 2>/dev/null || true); fi
[ -n "$sdk" ] || sdk=/usr/lib/google-cloud-sdk
fs_jar="$sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"
ps_jar=$(ls "$sdk"/platform/pubsub-emulator/lib/cloud-pubsub-emulator-*-all.jar 2>/dev/null | head -n1 || true)
if [ ! -f "$fs_jar" ] || [ -z "$ps_jar" ]; then
	say "emulators missing under $sdk; trying the Google Cloud CLI packages"
	apt_install google-cloud-cli-firestore-emulator google-cloud-cli-pubsub-emulator ||
		die "the Firestore and Pub/Sub emulators are not installed and cannot be installed here"
fi
say "emulators: $fs_jar, ${ps_jar:-$(ls "$sdk"/platform/pubsub-emulator/lib/cloud-pubsub-emulator-*-all.jar | head -n1)}"

command -v terraform >/dev/null || { say "installing terraform (Debian's package)"; apt_install terraform || die "terraform is not installed"; }
say "$(terraform version | head -n1)"

# The protocol model (harness/proof) is checked with spin, whose verifier is C.
command -v spin >/dev/null || { say "installing spin (Debian's package) for the protocol model"; apt_install spin || die "spin is not installed"; }
command -v cc >/dev/null || { say "installing a C compiler for spin's verifier"; apt_install gcc libc6-dev || die "no C compiler"; }
say "$(spin -V | head -n1)"

# The demo's trace page is checked in a real headless browser (harness/demo's browser test).
command -v chromium >/dev/null || { say "installing Chromium (Debian's package) for the trace page's browser test"; apt_install chromium || die "chromium is not installed"; }
say "$(chromium --version 2>/dev/null | head -n1)"

go mod download
say "go modules ready"
