# L1's lab session, run by /init once the shares are mounted (/lab/ro from the host, read-only;
# /lab/out, read-write, comes back to the host). Each sourced file holds one concept.
L1=/lab/ro/l1
OUT=/lab/out
. /lab/ro/config          # written by the host: STEP_TIMEOUT, SNOOP_CONTROL
. $L1/json.sh
. $L1/sysroot.sh
. $L1/devices.sh
. $L1/facts.sh
. $L1/witness.sh
. $L1/steps.sh
# Progress for the host (machine.py echoes "lab:" lines of the serial console): on stderr, so it
# reaches the console even from inside a block whose stdout goes to a file.
say() { echo "lab: $*" >&2; }

mkdir -p $OUT/l1 $OUT/steps /tmp/lab
sysroot_link
devices_setup
facts_record
witness_setup
steps_run
echo "$(cut -d' ' -f1 /proc/uptime)" > $OUT/l1/done
