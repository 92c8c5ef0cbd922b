# The PCI devices the host's QEMU gave L1 (host/machine.py), and the drivers they get here:
# - an e1000e (8086:10d3) on the root bus, alone in its IOMMU group: bound to vfio-pci, it is the
#   group (@vfio-group, @vfio-bdf) the steps attach to KVM;
# - two e1000 (82540em, 8086:100e) behind a conventional PCI bridge. Such a bridge forwards their
#   DMA under its own requester ID, so the IOMMU cannot tell them apart and puts both (with the
#   bridge) in one group. The first goes to vfio-pci, the second stays on the e1000 driver: that
#   group (@nonviable-group) is not viable for VFIO, and the second one is @host-bdf.
# Binding is by driver_override + drivers_probe, which wins over ID tables and needs no new_id.
E1000E_ID=0x8086:0x10d3
E1000_ID=0x8086:0x100e
PLACEHOLDERS=/tmp/lab/placeholders

pci_id() { echo "$(cat "$1/vendor"):$(cat "$1/device")"; }
pci_group() { basename "$(readlink "/sys/bus/pci/devices/$1/iommu_group")"; }
pci_driver() { d=$(readlink "/sys/bus/pci/devices/$1/driver") && basename "$d"; }
pci_bind() {  # BDF DRIVER
  echo "$2" > "/sys/bus/pci/devices/$1/driver_override"
  echo "$1" > /sys/bus/pci/drivers_probe
}
placeholder() { [ -n "$2" ] && echo "$1 $2" >> $PLACEHOLDERS; }

devices_setup() {
  for m in kvm_amd vfio_iommu_type1 vfio_pci; do modprobe $m || say "error: modprobe $m failed"; done
  vfio_bdf="" bridged=""
  for d in /sys/bus/pci/devices/*; do
    case $(pci_id "$d") in
      "$E1000E_ID") [ -n "$vfio_bdf" ] || vfio_bdf=${d##*/} ;;
      "$E1000_ID") bridged="$bridged ${d##*/}" ;;
    esac
  done
  set -- $bridged  # word splitting wanted: one BDF per word
  nv_bdf=$1 host_bdf=$2
  [ -n "$vfio_bdf" ] && pci_bind "$vfio_bdf" vfio-pci
  [ -n "$nv_bdf" ] && pci_bind "$nv_bdf" vfio-pci
  # The override keeps e1000 off the first bridge device when the module loads and probes.
  [ -n "$host_bdf" ] && echo e1000 > "/sys/bus/pci/devices/$host_bdf/driver_override"
  modprobe e1000 || say "error: modprobe e1000 failed"

  : > $PLACEHOLDERS
  placeholder @out "$OUT"
  if [ -n "$vfio_bdf" ] && [ "$(pci_driver "$vfio_bdf")" = vfio-pci ]; then
    placeholder @vfio-group "/dev/vfio/$(pci_group "$vfio_bdf")"
    placeholder @vfio-bdf "$vfio_bdf"
  else
    say "error: no e1000e on vfio-pci: @vfio-group and @vfio-bdf are unavailable"
  fi
  if [ -n "$host_bdf" ] && [ "$(pci_driver "$host_bdf")" = e1000 ]; then
    placeholder @host-bdf "$host_bdf"
  else
    say "error: no bridge e1000 on the e1000 driver: @host-bdf is unavailable"
  fi
  if [ -n "$nv_bdf" ] && [ "$(pci_driver "$nv_bdf")" = vfio-pci ] && [ "$(pci_group "$nv_bdf")" = "$(pci_group "$host_bdf")" ]; then
    placeholder @nonviable-group "/dev/vfio/$(pci_group "$nv_bdf")"
  else
    say "error: the bridge e1000s are not one group with one on vfio-pci and one on e1000: @nonviable-group is unavailable"
  fi
  while read -r name value; do say "placeholder $name = $value"; done < $PLACEHOLDERS
}
