#!/usr/bin/env bash
# deps.sh installs what iamdb's tests, demo and benchmarks need on a Debian
# or Ubuntu machine, and only what is missing: run it as often as you like.
#
#   PostgreSQL server + client   postgresql, postgresql-client
#   MariaDB server + client      mariadb-server, mariadb-client
#   Redis                        redis-server
#   PgBouncer (benchmarks)       pgbouncer
#   AWS CLI (acceptance tests)   awscli, unless an `aws` (e.g. pip's) exists
#   Node.js + npm (interop)      nodejs, npm; then `npm ci` of the JavaScript
#                                SDK's token generator in internal/interop/testdata/node
#   tools                        git, make, ca-certificates, openssl
#
#   scripts/deps.sh --check      only report what is missing (exit 1 if anything is)
#
# The tests start their own throwaway servers from these binaries on free
# ports (internal/testdb); they never use the services the packages install.
# So that a fresh install does not start those services either, a
# policy-rc.d that denies service starts is in place during the install.
# Services that already run on this machine are left alone.
set -euo pipefail

log() { printf 'deps.sh: %s\n' "$*"; }

have() { command -v "$1" >/dev/null 2>&1; }

# Server daemons live outside a normal user's PATH on Debian.
have_any() {
	local p
	for p in "$@"; do
		if [[ "$p" == /* ]]; then
			[[ -x "$p" ]] && return 0
		else
			have "$p" && return 0
		fi
	done
	return 1
}

have_postgres_server() {
	have initdb && have postgres && return 0
	local d
	for d in /usr/lib/postgresql/*/bin; do
		[[ -x "$d/initdb" && -x "$d/postgres" ]] && return 0
	done
	return 1
}

have_aws() {
	have aws && return 0
	# A pip/pyenv install may not be on sudo's or a script's PATH.
	local h
	for h in "${HOME:-/root}" /root ${SUDO_USER:+"$(getent passwd "$SUDO_USER" | cut -d: -f6)"}; do
		[[ -x "$h/.pyenv/shims/aws" || -x "$h/.local/bin/aws" ]] && return 0
	done
	return 1
}

check_only=false
case "${1:-}" in
--check) check_only=true ;;
"") ;;
*)
	log "unknown argument $1 (use --check to only report what is missing)" >&2
	exit 2
	;;
esac

# The JavaScript SDK's token generator for the interoperability matrix,
# pinned by package-lock.json, installed into the repository (node_modules
# is ignored by git). Reinstalled when the lock file changed since.
node_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/internal/interop/testdata/node"
node_stamp="$node_dir/node_modules/.package-lock.json"
have_node_modules() {
	[[ -f "$node_stamp" && ! "$node_dir/package-lock.json" -nt "$node_stamp" ]]
}
install_node_modules() {
	have_node_modules && return 0
	log "installing @aws-sdk/rds-signer (npm ci in $node_dir)"
	local npm_cmd=(npm ci --no-audit --no-fund --loglevel=error)
	if ((EUID == 0)) && [[ -n "${SUDO_USER:-}" ]]; then
		# Under sudo, install as the user who asked, who owns the checkout.
		sudo -u "$SUDO_USER" -H "${npm_cmd[@]}" --prefix "$node_dir"
	else
		(cd "$node_dir" && "${npm_cmd[@]}")
	fi
}

missing=()
have_postgres_server || missing+=(postgresql)
have psql || missing+=(postgresql-client)
{ have_any mariadb-install-db mysql_install_db && have_any mariadbd mysqld /usr/sbin/mariadbd /usr/sbin/mysqld; } || missing+=(mariadb-server)
have_any mariadb mysql || missing+=(mariadb-client)
have_any redis-server /usr/bin/redis-server || missing+=(redis-server)
have_any pgbouncer /usr/sbin/pgbouncer || missing+=(pgbouncer)
have_aws || missing+=(awscli)
have git || missing+=(git)
have make || missing+=(make)
[[ -s /etc/ssl/certs/ca-certificates.crt ]] || missing+=(ca-certificates)
have openssl || missing+=(openssl)
have node || missing+=(nodejs)
have npm || missing+=(npm)

if $check_only; then
	have_node_modules || missing+=("@aws-sdk/rds-signer (npm)")
	if ((${#missing[@]} == 0)); then
		log "everything is present"
		exit 0
	fi
	log "missing: ${missing[*]}"
	exit 1
fi

if ((${#missing[@]} == 0)); then
	install_node_modules
	log "everything is present; nothing to install"
	exit 0
fi
log "missing: ${missing[*]}"

if ! have apt-get; then
	log "no apt-get here: install these packages (or their equivalents) yourself: ${missing[*]}" >&2
	exit 1
fi

SUDO=()
if ((EUID != 0)); then
	if have sudo; then
		SUDO=(sudo)
	else
		log "not root and no sudo: run as root to install ${missing[*]}" >&2
		exit 1
	fi
fi

# Deny service starts during the install (exit code 101 = "action forbidden"
# for invoke-rc.d), unless the machine already has a policy, which we keep.
policy=/usr/sbin/policy-rc.d
if [[ ! -e "$policy" ]]; then
	printf '#!/bin/sh\n# installed by iamdb scripts/deps.sh for the duration of an install\nexit 101\n' |
		"${SUDO[@]}" tee "$policy" >/dev/null
	"${SUDO[@]}" chmod 0755 "$policy"
	trap '"${SUDO[@]}" rm -f "$policy"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
	apt-get install -y -q --no-install-recommends "${missing[@]}"
log "installed: ${missing[*]}"
install_node_modules
