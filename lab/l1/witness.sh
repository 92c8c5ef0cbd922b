# The witness: what KVM itself did during each step, traced in L1 independently of flushbench.
# - function tracer on KVM's non-coherent-DMA bookkeeping (kvm_arch_{,un}register_noncoherent_dma),
#   on its WBINVD exit handler (kvm_emulate_wbinvd) and on the function KVM runs on every CPU it
#   flushes: wbinvd_ipi (arch/x86/kvm/x86.c) on 6.1 and 6.12, __wbinvd (arch/x86/lib/cache-smp.c)
#   on newer kernels (the first that exists is traced), so each call is one real WBINVD on that CPU;
# - a return probe on vfio_file_enforced_coherent, the question KVM asks when a VFIO file is added
#   (its answer decides whether non-coherent DMA is registered).
# It uses its own ftrace instance, so flushbench's use of tracefs cannot disturb it, with
# trace_clock mono: timestamps are CLOCK_MONOTONIC, the clock of flushbench's phase windows.
TRACEFS=/sys/kernel/tracing
WI=$TRACEFS/instances/flushbench-lab
WITNESS_FUNCS="kvm_arch_register_noncoherent_dma kvm_arch_unregister_noncoherent_dma kvm_emulate_wbinvd"
# In preference order: 6.12 also has __wbinvd, but there it serves wbinvd_on_all_cpus() callers
# outside KVM, so it is traced only where KVM itself uses it.
WITNESS_FLUSH="wbinvd_ipi __wbinvd"
WITNESS_KPROBE=vfio_file_enforced_coherent
WITNESS_TRACED=

witness_setup() {
  if ! mkdir $WI 2>/dev/null && [ ! -d $WI ]; then say "error: no ftrace instance ($WI): no witness"; return; fi
  echo mono > $WI/trace_clock || say "error: trace_clock mono not accepted"
  echo 4096 > $WI/buffer_size_kb
  # The filter refuses a function the kernel does not have (cheaper than reading
  # available_filter_functions, which takes seconds under TCG).
  for f in $WITNESS_FUNCS; do
    echo "$f" >> $WI/set_ftrace_filter 2>/dev/null && WITNESS_TRACED="$WITNESS_TRACED $f" || say "error: cannot trace $f"
  done
  for f in $WITNESS_FLUSH; do
    echo "$f" >> $WI/set_ftrace_filter 2>/dev/null && WITNESS_TRACED="$WITNESS_TRACED $f" && break
  done
  # An empty filter would trace every function in the kernel: only switch the tracer on with one.
  [ -n "$WITNESS_TRACED" ] && echo function > $WI/current_tracer
  if echo "r:fblab/$WITNESS_KPROBE $WITNESS_KPROBE ret=\$retval:u8" >> $TRACEFS/kprobe_events &&
    echo 1 > $WI/events/fblab/$WITNESS_KPROBE/enable; then
    WITNESS_TRACED="$WITNESS_TRACED $WITNESS_KPROBE(ret)"
  else
    say "error: no return probe on $WITNESS_KPROBE"
  fi
  say "witness: tracing$WITNESS_TRACED (clock $(sed -n 's/.*\[\(.*\)\].*/\1/p' $WI/trace_clock))"
}

witness_begin() {  # STEP_ID
  : > $WI/trace
  echo "flushbench-lab step $1 begin" > $WI/trace_marker
}

witness_end() {  # STEP_ID
  echo "flushbench-lab step $1 end" > $WI/trace_marker
}

# witness_json ID KIND COMMAND EXIT_CODE: the step's witness as JSON on stdout, a one-line summary
# on stderr. Events are those between the step's two markers; ts_ns is CLOCK_MONOTONIC with the
# trace's microsecond resolution.
witness_json() {
  overrun=$(cat $WI/per_cpu/cpu*/stats 2>/dev/null | awk '$1 == "overrun:" { n += $2 } END { print n + 0 }')
  grep -v '^#' $WI/trace 2>/dev/null | awk -v id="$1" -v kind="$2" -v cmd="$3" -v rc="$4" -v overrun="$overrun" \
    -v traced="$WITNESS_TRACED" -v kprobe="$WITNESS_KPROBE" '
    function q(s) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); gsub(/\t/, "\\t", s); return "\"" s "\"" }
    {
      if (!match($0, /\[[0-9]+\]( [^ ]+)? +[0-9]+\.[0-9]+: /)) next
      nh = split(substr($0, RSTART, RLENGTH), h, " ")
      cpu = substr(h[1], 2, length(h[1]) - 2) + 0
      ts = h[nh]; sub(/:$/, "", ts); split(ts, t, ".")
      ns = t[1] * 1000000000 + t[2] * 1000
      rest = substr($0, RSTART + RLENGTH)
      split(rest, w, " ")
      if (w[1] == "tracing_mark_write:") {
        if (rest ~ / begin$/) begin_ns = ns
        if (rest ~ / end$/) end_ns = ns
        next
      }
      if (begin_ns == "" || end_ns != "") { outside++; next }
      fn = w[1]; ret = ""
      if (fn ~ /:$/) {          # an event, not a function: our return probe
        sub(/:$/, "", fn)
        if (match(rest, /ret=[0-9a-fx]+/)) ret = substr(rest, RSTART + 4, RLENGTH - 4)
      }
      ev[++n] = sprintf("{\"ts_ns\": %.0f, \"cpu\": %d, \"func\": %s%s}", ns, cpu, q(fn), ret == "" ? "" : ", \"ret\": " (ret + 0))
      total[fn]++
      per_cpu[cpu, fn]++; cpus[cpu] = 1
      if (fn == kprobe) answers[ret + 0]++
    }
    END {
      printf "{\n  \"step\": %d,\n  \"kind\": %s,\n  \"command\": %s,\n  \"exit_code\": %d,\n", id, q(kind), q(cmd), rc
      if (begin_ns != "" && end_ns != "")
        printf "  \"window_ns\": [%.0f, %.0f],\n  \"wall_s\": %.6f,\n", begin_ns, end_ns, (end_ns - begin_ns) / 1e9
      else
        printf "  \"window_ns\": null,\n  \"wall_s\": null,\n"
      printf "  \"clock\": \"mono\",\n  \"ts_resolution_ns\": 1000,\n  \"traced\": %s,\n", q(substr(traced, 2))
      printf "  \"overrun\": %d,\n  \"outside_window\": %d,\n  \"totals\": {", overrun, outside
      sep = ""
      for (f in total) { printf "%s%s: %d", sep, q(f), total[f]; sep = ", " }
      printf "},\n  \"per_cpu\": {"
      sep = ""
      for (c in cpus) {
        printf "%s\"%d\": {", sep, c; sep2 = ""
        for (f in total) if ((c, f) in per_cpu) { printf "%s%s: %d", sep2, q(f), per_cpu[c, f]; sep2 = ", " }
        printf "}"; sep = ", "
      }
      printf "},\n  \"events\": ["
      for (i = 1; i <= n; i++) printf "%s\n    %s", (i > 1 ? "," : ""), ev[i]
      printf "\n  ]\n}\n"
      flush = total["wbinvd_ipi"] + total["__wbinvd"]
      printf "register %d, unregister %d, WBINVD exits %d, flushes %d, %s answered coherent %d / non-coherent %d%s\n", \
        total["kvm_arch_register_noncoherent_dma"], total["kvm_arch_unregister_noncoherent_dma"], total["kvm_emulate_wbinvd"], \
        flush, kprobe, answers[1], answers[0], overrun ? ", TRACE OVERRUN " overrun : "" | "cat >&2"
    }'
}
