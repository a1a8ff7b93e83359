# live patch verification of lp_cmdline: load, transition, effect, stress, rollback.
# (a snippet of the patchflow guest /init: pf_value/pf_file/pf_run come from there)
lp_sys=/sys/kernel/livepatch/lp_cmdline
lp_effect() { cat /proc/cmdline ; }
pf_file interrupts-before /proc/interrupts
pf_file vmstat-before /proc/vmstat
pf_run effect-before lp_effect
pf_run load insmod /lib/modules/livepatch.ko
i=0
while [ ! -e "$lp_sys/transition" ] && [ "$i" -lt 10 ]; do sleep 1; i=$((i + 1)); done
i=0
while [ "$(cat "$lp_sys/transition" 2>/dev/null)" = 1 ] && [ "$i" -lt 30 ]; do
	sleep 1
	i=$((i + 1))
done
pf_value enabled "$(cat "$lp_sys/enabled" 2>/dev/null)"
pf_value transition "$(cat "$lp_sys/transition" 2>/dev/null)"
pf_value transition-seconds "$i"
if [ "$(cat "$lp_sys/transition" 2>/dev/null)" = 1 ]; then
	# which tasks block the transition: patch_state is -1 (none), 0 (unpatched), 1 (patched)
	for t in /proc/[0-9]*; do
		s=$(cat "$t/patch_state" 2>/dev/null)
		if [ "$s" = 0 ]; then
			echo "${t#/proc/} $(cat "$t/comm") $(cat "$t/stack" 2>/dev/null | tr '\n' '|')"
		fi
	done > /tmp/lp-blocked
	pf_file blocked-tasks /tmp/lp-blocked
fi
pf_run effect-after lp_effect
pf_run stress stress-ng --vm 2 --vm-bytes 75% --vm-method rand-set --page-in --timeout 10s --metrics-brief
pf_file interrupts-after /proc/interrupts
pf_file vmstat-after /proc/vmstat
pf_run effect-after-stress lp_effect
# rollback: disable, wait for the reverse transition (the sysfs folder goes away), unload
echo 0 > "$lp_sys/enabled" 2>/dev/null
i=0
while [ -d "$lp_sys" ] && [ "$i" -lt 30 ]; do sleep 1; i=$((i + 1)); done
pf_value disable-seconds "$i"
pf_value disabled-gone "$([ -d "$lp_sys" ] && echo no || echo yes)"
pf_run rmmod rmmod lp_cmdline
pf_run effect-rollback lp_effect
pf_file modules /proc/modules
pf_file tainted /proc/sys/kernel/tainted
