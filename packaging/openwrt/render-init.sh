#!/bin/sh
# Runs start_service of files/edgewatch.init outside OpenWrt, for tests and for a look at what
# a UCI config turns into:
#
#   packaging/openwrt/render-init.sh UCI_FILE OUT_DIR [jail]
#
# writes OUT_DIR/edgewatch.toml (the agent config the init script generates) and
# OUT_DIR/procd.log (one line per procd call: the command, its parameters, the jail). With
# "jail", the script sees ujail installed, as on a default OpenWrt image. A small parser stands
# in for libuci (config/option/list lines; no validation of types), and procd's functions only
# record their calls; nothing outside OUT_DIR is written.
set -eu

[ $# -ge 2 ] || { sed -n '5p' "$0" >&2; exit 2; }
uci_file="$1"
out="$2"
jail="${3:-}"
here="$(cd "$(dirname "$0")" && pwd)"
log="$out/procd.log"
: >"$log"

# Prints NAME='VALUE' for each option of section $1 of the UCI file (list values joined by
# spaces, empty values left out so that the default applies).
uci_section_vars() {
	awk -v want="$1" "
		function unquote(s) {
			if (s ~ /^'.*'\$/ || s ~ /^\".*\"\$/) s = substr(s, 2, length(s) - 2)
			return s
		}
		{
			line = \$0
			sub(/^[ \t]+/, \"\", line)
			if (line == \"\" || line ~ /^#/) next
			kw = line; sub(/[ \t].*/, \"\", kw)
			rest = line; sub(/^[^ \t]+[ \t]+/, \"\", rest)
			if (kw == \"config\") {
				name = rest; sub(/^[^ \t]+[ \t]*/, \"\", name)
				inside = (unquote(name) == want)
				next
			}
			if (!inside) next
			key = rest; sub(/[ \t].*/, \"\", key)
			val = rest; sub(/^[^ \t]+[ \t]*/, \"\", val); val = unquote(val)
			if (val == \"\") next
			gsub(/'/, \"'\\\\''\", val)
			if (kw == \"list\" && (key in vals)) vals[key] = vals[key] \" \" val
			else vals[key] = val
		}
		END { for (k in vals) printf \"%s='%s'\\n\", k, vals[k] }
	" "$uci_file"
}

# Names of the sections of type $1.
uci_sections() {
	awk -v type="$1" '$1 == "config" && $2 == type { n = $3; gsub(/[\047"]/, "", n); print n }' "$uci_file"
}

# Stand-ins for OpenWrt's shell libraries (/lib/functions.sh, /lib/functions/procd.sh).
config_load() { :; }
config_foreach() {
	fn="$1" type="$2"
	shift 2
	for section in $(uci_sections "$type"); do
		"$fn" "$section" "$@"
	done
}
uci_load_validate() {
	_section="$3" _callback="$4"
	shift 4
	for _spec in "$@"; do
		_name="${_spec%%:*}"
		_default=""
		case "$_spec" in *:*:*) _default="${_spec#*:}" _default="${_default#*:}" ;; esac
		eval "$_name=\$_default"
	done
	eval "$(uci_section_vars "$_section")"
	"$_callback" "$_section" 0
}
user_exists() { [ "$1" = edgewatch ]; }
procd_open_instance() { echo "procd_open_instance $*" >>"$log"; }
procd_set_param() { echo "procd_set_param $*" >>"$log"; }
procd_add_jail() { echo "procd_add_jail $*" >>"$log"; }
procd_add_jail_mount() { echo "procd_add_jail_mount $*" >>"$log"; }
procd_add_jail_mount_rw() { echo "procd_add_jail_mount_rw $*" >>"$log"; }
procd_close_instance() { echo "procd_close_instance" >>"$log"; }
mkdir() { echo "mkdir $*" >>"$log"; }
chown() { echo "chown $*" >>"$log"; }
chmod() { echo "chmod $*" >>"$log"; }
touch() { echo "touch $*" >>"$log"; }

# shellcheck disable=SC1091 # the init script is checked on its own (test-ipk.sh)
. "$here/files/edgewatch.init"
# shellcheck disable=SC2034 # TOML, CAPABILITIES and UJAIL are read by the init script
TOML="$out/edgewatch.toml"
if [ "$jail" = jail ]; then
	# shellcheck disable=SC2034
	UJAIL=/bin/true
	# shellcheck disable=SC2034
	CAPABILITIES="$here/files/edgewatch.json"
else
	# shellcheck disable=SC2034
	UJAIL=/nonexistent/ujail
fi
start_service
