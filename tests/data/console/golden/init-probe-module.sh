#!/bin/busybox sh
# patchflow guest init, generated from patchflow/templates/boot/init.sh.j2.
# Results go to the serial console between the markers below, one JSON
# object per line ({"name": ..., "b64": ...}), so that the host can read them
# back even when kernel messages are interleaved with them.
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /usr/sbin /sbin /usr/bin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
echo "PATCHFLOW-INIT $(cut -d' ' -f1 /proc/uptime)"
PF_OUT=/tmp/pf-results
mkdir -p "$PF_OUT"
# pf_file NAME FILE: hand FILE back to the host under NAME
pf_file() { cp "$2" "$PF_OUT/$1" 2>/dev/null || echo "missing: $2" > "$PF_OUT/$1"; }
# pf_value NAME VALUE: hand a short string back to the host
pf_value() { printf '%s' "$2" > "$PF_OUT/$1"; }
# pf_run NAME CMD...: run CMD, keep its output and exit code as NAME and NAME.rc
pf_run() { _n=$1; shift; "$@" > "$PF_OUT/$_n" 2>&1; _rc=$?; pf_value "$_n.rc" "$_rc"; return $_rc; }
pf_value kernel "$(uname -r)"
pf_value nproc "$(grep -c ^processor /proc/cpuinfo)"
# extra kernel modules shipped in the initramfs
pf_run insmod-1 insmod /lib/modules/lp.ko
# ---- snippet: probe
pf_run uname uname -a
dmesg 2>/dev/null | tail -n 200 > "$PF_OUT/dmesg-tail"
echo "===PATCHFLOW-RESULTS-BEGIN==="
for f in "$PF_OUT"/*; do
    echo "{\"name\": \"$(basename "$f")\", \"b64\": \"$(base64 -w 0 "$f")\"}"
done
echo "===PATCHFLOW-RESULTS-END==="
sync
poweroff -f
