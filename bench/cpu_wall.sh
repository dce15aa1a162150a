#!/usr/bin/env bash
# Wall time and the whole machine's busy core-seconds (from /proc/stat, steal included: the command, the
# processes it starts, and the services it talks to) of one command, e.g.
#   bench/cpu_wall.sh make test PYTEST_ARGS="-q -p no:cacheprovider"
# Prints one line on stderr; exits with the command's exit code. On a shared machine
# compare only runs made back to back.
read -r _ u n s _ _ x y z _ < /proc/stat
t0=$(date +%s.%N)
"$@"
rc=$?
t1=$(date +%s.%N)
read -r _ u2 n2 s2 _ _ x2 y2 z2 _ < /proc/stat
busy=$(( (u2 + n2 + s2 + x2 + y2 + z2) - (u + n + s + x + y + z) ))
ticks=$(getconf CLK_TCK)
python3 -c "print(f'wall {$t1 - $t0:.1f} s, machine busy {$busy / $ticks:.1f} core-s, rc $rc')" >&2
exit $rc
