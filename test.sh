#!/usr/bin/env bash
# Runs every mxguard test: installs what the tests need (Debian packages,
# staticcheck), checks formatting and lint, runs the unit, end-to-end and
# fuzz tests. Used by .ci/run; safe to run by hand on a fresh Debian
# machine with Go.
set -euo pipefail
cd "$(dirname "$0")"

# Every Debian package a test runs a program from, each named: a test
# fails, naming its package, when one is missing.
packages=(
	redis-server       # internal/redistest: a real Redis for the fleet counters
	redis-sentinel     # internal/redistest: Sentinels that fail a primary over to its replica
	redis-tools        # redis-cli: internal/redistest joins a Redis Cluster with --cluster create
	postfix            # /usr/sbin/smtp-sink (internal/smtpsink); never started as a daemon
	swaks              # e2e TestSwaksSTARTTLS
	libnet-ssleay-perl # swaks' STARTTLS; Debian's swaks only recommends it
	python3            # e2e TestDeliverSmtplib: Python's smtplib as the client
	iproute2           # ip: e2e TestDefaults brings up lo in a network namespace of its own
	dovecot-core       # internal/dovecottest: Dovecot as an LMTP downstream that knows its users; never started as a daemon
	dovecot-lmtpd      # /usr/lib/dovecot/lmtp
	prometheus         # e2e TestPrometheusScrape: a real scraper of the admin listener; never started as a daemon
	fail2ban           # fail2ban-regex: e2e TestFail2banFilter runs contrib/fail2ban on the real log; never started as a daemon
	systemd            # systemd-analyze: e2e TestSystemdUnit verifies contrib/systemd/mxguard.service
	haproxy            # e2e TestProxyProtocolHAProxy: a real load balancer sending PROXY v1 and v2 headers; never started as a daemon
	chromium           # e2e TestConsole*: a real browser (headless, driven by chromedp) on the web console; its Recommends (the sandbox) are not needed with --no-sandbox
	fonts-dejavu-core  # the font of the console's screenshots (MXGUARD_ARTIFACTS)
	patch              # internal/suggest, e2e TestSuggest: patch(1) applies the diff mxguard suggest prints
)
need=()
for p in "${packages[@]}"; do
	# Installed means dpkg's "ii"; "rc" (removed, config left) and the
	# like must be installed again.
	if [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null)" != "ii " ]; then
		need+=("$p")
	fi
done
if [ ${#need[@]} -gt 0 ]; then
	echo "== installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	if command -v debconf-set-selections >/dev/null; then
		# Postfix for its test tools (smtp-sink, smtp-source) and the private
		# instances of internal/postfixtest: Debian's own instance never runs.
		echo "postfix postfix/main_mailer_type select Local only" | debconf-set-selections
		echo "postfix postfix/mailname string localhost" | debconf-set-selections
	fi
	# The postinst scripts of postfix, dovecot-core, redis-server, prometheus,
	# fail2ban and haproxy start Debian's own instance through invoke-rc.d (there is
	# no systemd here), which would take ports 25, 143, 993, 110, 6379, 9090
	# ... The tests run private instances only.
	# invoke-rc.d asks policy-rc.d, and 101 forbids: ours answers so for the
	# install, and whatever was there before is put back after it.
	policy=/usr/sbin/policy-rc.d
	saved=
	if [ -e "$policy" ]; then
		saved=$(mktemp)
		cp -p "$policy" "$saved"
	fi
	restore_policy() {
		if [ -n "$saved" ]; then mv -f "$saved" "$policy"; else rm -f "$policy"; fi
	}
	printf '#!/bin/sh\n# test.sh: no service starts while it installs packages.\nexit 101\n' >"$policy"
	chmod 755 "$policy"
	if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }; then
		restore_policy
		exit 1
	fi
	restore_policy
fi
export PATH="$PATH:$(go env GOPATH)/bin"
if ! command -v staticcheck >/dev/null; then
	echo "== installing staticcheck"
	GOFLAGS= go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change: $unformatted"
	exit 1
fi
echo "== go vet"
go vet ./...
echo "== staticcheck"
staticcheck ./...

echo "== go test"
go test -count=1 -timeout 15m ./...

echo "== go test -race (protocol, greeting pause, admission, limits, fleet, spool)"
go test -count=1 -race -timeout 10m ./internal/smtpd/ ./internal/hold/ ./internal/admit/ ./internal/limit/ ./internal/fleet/ ./internal/spool/ ./internal/server/

echo "== fuzzing, briefly"
# Each fuzz target runs for a few seconds on top of its committed corpus.
fuzzlog=$(mktemp)
# inputs counts the files of a corpus directory, 0 when it does not exist.
inputs() { if [ -d "$1" ]; then find "$1" -type f | wc -l; else echo 0; fi; }
trap 'rm -f "$fuzzlog"' EXIT
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
		echo "-- $pkg $target"
		corpus="$dir/testdata/fuzz/$target"
		before=$(inputs "$corpus")
		for try in 1 2; do
			if go test -run '^$' -fuzz "^${target}\$" -fuzztime "${FUZZTIME:-4s}" "$pkg" >"$fuzzlog" 2>&1; then
				break
			fi
			# Go 1.26's fuzzing coordinator can fail a target at the end of
			# -fuzztime with a bare "context deadline exceeded" and no input
			# written (go.dev/issue/75804, fixed in Go 1.27): that is tried
			# once more. A written input, or a second failure, fails.
			if [ "$try" = 1 ] && [ "$(inputs "$corpus")" = "$before" ] &&
				grep -q '^    context deadline exceeded$' "$fuzzlog"; then
				echo "   (go.dev/issue/75804: the fuzzing coordinator's deadline race, no input written; once more)"
				continue
			fi
			cat "$fuzzlog"
			echo "fuzzing $target found a failure; the input is in $corpus/"
			exit 1
		done
	done
done
echo "all tests passed"
