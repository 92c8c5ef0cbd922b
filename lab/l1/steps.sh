# The host's --step list (/lab/ro/steps, one per line: "fb<TAB>flushbench arguments" or
# "sh<TAB>busybox shell command"), run in order in /lab/out with placeholders substituted, stdin
# from /dev/null, a timeout, and the witness around each. A failing or hanging step never stops
# the next one, and L1 powers off after the last.
STEPS=/lab/ro/steps
PLACEHOLDER_NAMES="@vfio-group @vfio-bdf @nonviable-group @host-bdf @out"

substitute() {
  s=$1
  while read -r name value; do s=$(printf '%s' "$s" | sed "s|$name|$value|g"); done < $PLACEHOLDERS
  printf '%s' "$s"
}

steps_run() {
  cd $OUT || return  # flushbench's default results/<UTC>-<host>.json then comes back too
  total=$(grep -c . $STEPS)
  n=0
  while IFS= read -r line <&3; do
    [ -n "$line" ] || continue
    n=$((n + 1))
    id=$(printf %02d $n)
    kind=${line%%	*}
    cmd=$(substitute "${line#*	}")
    log=$OUT/steps/$id
    missing=
    for p in $PLACEHOLDER_NAMES; do case $cmd in *$p*) missing="$missing $p" ;; esac; done
    say "step $n/$total [$kind] $cmd"
    witness_begin $id
    if [ -n "$missing" ]; then
      echo "flushbench-lab: placeholder$missing unavailable in this L1 (see the lab: lines of the serial log)" > $log.stderr
      : > $log.stdout
      rc=125
    else
      case $kind in
        fb) timeout -k 10 "$STEP_TIMEOUT" sh -c "exec flushbench $cmd" ;;
        *) timeout -k 10 "$STEP_TIMEOUT" sh -c "$cmd" ;;
      esac < /dev/null > $log.stdout 2> $log.stderr
      rc=$?
    fi
    witness_end $id
    witness_json $n "$kind" "$cmd" $rc > $log.json 2> /tmp/lab/summary
    say "step $n/$total exit $rc: $(cat /tmp/lab/summary)"
  done 3< $STEPS
}
