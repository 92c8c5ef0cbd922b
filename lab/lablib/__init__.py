"""The flushbench lab: Debian kernels booted as L1 under QEMU TCG with an emulated VT-d, so that
KVM's non-coherent DMA path (no IOMMU snoop control) can be exercised and witnessed on machines that
have neither VT-d nor VFIO. `lab/flushbench-lab` is the command; each module here is one step of it."""
