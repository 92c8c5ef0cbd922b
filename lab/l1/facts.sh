# What L1 is, recorded next to the results: kernel, CPUs, the VT-d unit's ECAP (bit 7 = snoop
# control, the bit this whole lab turns on and off), IOMMU groups, devices and their drivers, and
# KVM's kvm_exit/kvm_entry tracepoint formats copied verbatim (flushbench decodes kvm_exit from the
# running kernel's format file; these are real SVM ones for its unit tests).
facts_record() {
  mkdir -p $OUT/l1/tracepoints
  for e in kvm_exit kvm_entry; do
    cp /sys/kernel/tracing/events/kvm/$e/format $OUT/l1/tracepoints/$e.format 2>/dev/null || say "error: no kvm:$e tracepoint"
  done
  dmesg > $OUT/l1/dmesg.txt
  {
    printf '{\n  "kernel": %s,\n  "kernel_version": %s,\n  "cpus": %s,\n' "$(jstr "$(uname -r)")" "$(jstr "$(uname -v)")" "$(nproc)"
    printf '  "snoop_control_requested": %s,\n' "$(jstr "$SNOOP_CONTROL")"
    printf '  "kvm_amd": {"npt": %s, "nested": %s},\n' "$(jstr "$(cat /sys/module/kvm_amd/parameters/npt 2>/dev/null)")" \
      "$(jstr "$(cat /sys/module/kvm_amd/parameters/nested 2>/dev/null)")"
    printf '  "iommus": ['
    sep=
    for u in /sys/class/iommu/*; do
      [ -e "$u/intel-iommu/ecap" ] || continue
      ecap=$(cat "$u/intel-iommu/ecap")
      sc=$(( (0x$ecap >> 7) & 1 ))
      say "VT-d ${u##*/}: ECAP 0x$ecap, snoop control (bit 7) $sc"
      printf '%s\n    {"name": %s, "ecap": %s, "cap": %s, "snoop_control": %s}' "$sep" "$(jstr "${u##*/}")" \
        "$(jstr "0x$ecap")" "$(jstr "0x$(cat "$u/intel-iommu/cap")")" "$sc"
      sep=,
    done
    printf '\n  ],\n  "devices": ['
    sep=
    for d in /sys/bus/pci/devices/*; do
      b=${d##*/}
      printf '%s\n    {"bdf": %s, "id": %s, "class": %s, "group": %s, "driver": %s}' "$sep" "$(jstr "$b")" \
        "$(jstr "$(pci_id "$d")")" "$(jstr "$(cat "$d/class")")" "$(jstr "$(pci_group "$b")")" "$(jstr "$(pci_driver "$b")")"
      sep=,
    done
    printf '\n  ],\n  "iommu_groups": {'
    sep=
    for g in /sys/kernel/iommu_groups/*; do
      printf '%s\n    %s: %s' "$sep" "$(jstr "${g##*/}")" "$(jstr "$(ls "$g/devices" | tr '\n' ' ')")"
      sep=,
    done
    printf '\n  },\n  "vfio": %s,\n  "placeholders": {' "$(jstr "$(ls /dev/vfio 2>/dev/null | tr '\n' ' ')")"
    sep=
    while read -r name value; do printf '%s\n    %s: %s' "$sep" "$(jstr "$name")" "$(jstr "$value")"; sep=,; done < $PLACEHOLDERS
    printf '\n  },\n  "modules": %s\n}\n' "$(jstr "$(lsmod | awk 'NR > 1 { print $1 }' | sort | tr '\n' ' ')")"
  } > $OUT/l1/facts.json
}
