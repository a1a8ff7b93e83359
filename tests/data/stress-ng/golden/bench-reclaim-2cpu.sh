# stress-ng benchmark snippet, generated from patchflow/templates/boot/bench.sh.j2
# profile reclaim: 2 workers sharing 256M, memcg 64M, zram 512M
PF_CG=""
if [ -e /sys/block/zram0 ] || modprobe zram 2>/dev/null; then
    echo 512M > /sys/block/zram0/disksize && mkswap /dev/zram0 >/dev/null && swapon /dev/zram0 \
        && pf_value zram ok || pf_value zram failed
else
    pf_value zram missing
fi
mkdir -p /sys/fs/cgroup
if mount -t cgroup2 none /sys/fs/cgroup 2>/dev/null && echo +memory > /sys/fs/cgroup/cgroup.subtree_control \
        && mkdir -p /sys/fs/cgroup/bench && echo 64M > /sys/fs/cgroup/bench/memory.max; then
    PF_CG=/sys/fs/cgroup/bench
    pf_value memcg ok
else
    pf_value memcg missing
fi
[ "$(cat $PF_OUT/zram)" = ok ] || PF_SKIP="zram unavailable"
[ -n "$PF_CG" ] || PF_SKIP="${PF_SKIP:+$PF_SKIP, }memcg unavailable"
if [ -z "$PF_SKIP" ]; then
    pf_file interrupts.before /proc/interrupts
    pf_file vmstat.before /proc/vmstat
    # the subshell joins the memcg first so that stress-ng and its workers are charged to it
    pf_run stress sh -c '[ -n "$1" ] && echo $$ > "$1/cgroup.procs"; shift; exec "$@"' pf "$PF_CG" \
        stress-ng --vm 2 --vm-bytes 256M --vm-keep --vm-method write64 --timeout 30s --metrics --yaml /tmp/stress.yaml
    pf_file interrupts.after /proc/interrupts
    pf_file vmstat.after /proc/vmstat
    pf_file stress.yaml /tmp/stress.yaml
    [ -n "$PF_CG" ] && pf_file memcg.events "$PF_CG/memory.events"
else
    pf_value skipped "$PF_SKIP"
fi
