# flushbench and QEMU run from the read-only share: their libraries sit there under the paths `ldd`
# gave on the host (host/payload.py), and these links put them where the dynamic loader looks by
# default, so neither needs LD_LIBRARY_PATH (which QEMU, started by flushbench, would inherit anyway).
# QEMU finds its firmware relative to its binary (../share/qemu), the /usr/share/qemu link is for
# anything that asks for the built-in path.
SYSROOT=/lab/ro/sysroot
sysroot_link() {
  for d in lib64 lib/x86_64-linux-gnu usr/lib/x86_64-linux-gnu usr/share/qemu; do
    [ -d "$SYSROOT/$d" ] || continue
    case $d in */*) mkdir -p "/${d%/*}" ;; esac
    ln -sfn "$SYSROOT/$d" "/$d"
  done
  export PATH=/lab/ro/fb/bin:$SYSROOT/usr/bin:$PATH
}
