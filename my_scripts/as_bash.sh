# shellcheck shell=sh
# Sourced first by every script in my_scripts/ (POSIX sh, so dash can read it): `sh SCRIPT` runs dash on
# Debian and Ubuntu, which ignores the script's #! line, so re-run the script under bash with the same
# arguments; under bash this does nothing. Exit 1 (a missing prerequisite) when there is no bash.
if [ -z "${BASH_VERSION:-}" ]; then
	if ! command -v bash >/dev/null 2>&1; then
		printf '[%s] error: this script needs bash, which is not on PATH; install bash (apt-get install bash)\n' "${0##*/}" >&2
		exit 1
	fi
	exec bash "$0" "$@"
fi
