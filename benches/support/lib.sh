# Helpers the load scripts share: `source "$(dirname "$0")/support/lib.sh"`.

# median "V1 V2 …": the median of space-separated numbers (the lower middle of an
# even count).
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# mib KIB: kibibytes as mebibytes, one decimal.
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# free_port: a TCP port free on loopback now (for a server the script starts next).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
