/* The three ways in (see common/boot.h), the switch to long mode, exception entry stubs, and the
   setjmp/longjmp pair that lets a faulting cell return to the runner. The control-register, EFER
   and page-table values (kBoot*) come from common/x86 through guest/boot_constants.cc. */

#define MB_MAGIC     0x1BADB002
#define MB_FLAGS     ((1 << 1) | (1 << 16))   /* memory info; a.out kludge: load by header address */
#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define DIRECT_MAGIC 0x46424b31
#define ENTRY_MULTIBOOT 1
#define ENTRY_PVH       2
#define ENTRY_DIRECT    3
#define KERNEL_CS 0x08
#define KERNEL_DS 0x10

    .section .multiboot, "a"
    .align 4
mb_header:
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)
    .long mb_header         /* header_addr */
    .long __image_start     /* load_addr */
    .long __load_end        /* load_end_addr */
    .long __bss_end         /* bss_end_addr: the loader zeroes up to here */
    .long mb_entry32        /* entry_addr */

    /* QEMU reads the entry as 8 bytes after a 4-aligned name, so the descriptor is a quad. */
    .section .note.Xen, "a", @note
    .align 4
    .long 4, 8, XEN_ELFNOTE_PHYS32_ENTRY
    .asciz "Xen"
    .align 4
    .quad pvh_entry32

    .section .text.boot, "ax"
    .code32
    .globl mb_entry32
mb_entry32:                 /* EAX = 0x2BADB002, EBX = multiboot info */
    mov $ENTRY_MULTIBOOT, %edi
    mov %ebx, %esi
    jmp enter_long_mode

    .globl pvh_entry32
pvh_entry32:                /* EBX = hvm_start_info */
    mov $ENTRY_PVH, %edi
    mov %ebx, %esi

enter_long_mode:
    cli
    cld
    mov $boot_stack_top, %esp
    /* Identity-map the first 1 GiB with 2 MiB pages: enough for the image and the loader's
       info; the kernel builds its real page tables in C++. */
    mov $boot_pd, %ebx
    xor %ecx, %ecx
1:  mov %ecx, %eax
    shl $21, %eax
    or $kBootLargePageEntry, %eax
    mov %eax, (%ebx, %ecx, 8)
    movl $0, 4(%ebx, %ecx, 8)
    inc %ecx
    cmp $512, %ecx
    jne 1b
    mov $boot_pd, %edx
    or $kBootTableEntry, %edx
    mov $boot_pdpt, %eax
    mov %edx, (%eax)
    mov $boot_pdpt, %edx
    or $kBootTableEntry, %edx
    mov $boot_pml4, %eax
    mov %edx, (%eax)
    mov %eax, %cr3
    mov %cr4, %eax
    or $kBootCr4, %eax      /* PAE */
    mov %eax, %cr4
    mov $kBootMsrEfer, %ecx
    rdmsr
    or $kBootEfer, %eax     /* LME */
    wrmsr
    mov %cr0, %eax
    or $kBootCr0, %eax      /* PG, WP, PE */
    mov %eax, %cr0
    lgdt gdt_ptr
    ljmp $KERNEL_CS, $from_32bit

    .code64
from_32bit:
    mov %edi, %edi          /* upper halves are undefined after the mode switch */
    mov %esi, %esi
    jmp kernel64

    /* Direct 64-bit entry (the ELF entry point): RDI = DIRECT_MAGIC, RSI = BootInfo. */
    .globl direct_entry64
direct_entry64:
    cli
    cld
    lgdt gdt_ptr
    lea boot_stack_top(%rip), %rsp
    pushq $KERNEL_CS
    lea kernel64(%rip), %rax
    push %rax
    mov $ENTRY_DIRECT, %edi
    lretq

kernel64:
    mov $KERNEL_DS, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    lea boot_stack_top(%rip), %rsp
    xor %ebp, %ebp
    call kmain              /* kmain(entry_kind, info_address): never returns */
2:  cli
    hlt
    jmp 2b

/* Exception stubs: push a zero error code where the CPU does not, then the vector. */
.macro isr_noerr n
isr_\n: pushq $0
    pushq $\n
    jmp isr_common
.endm
.macro isr_err n
isr_\n: pushq $\n
    jmp isr_common
.endm

    .text
    isr_noerr 0;  isr_noerr 1;  isr_noerr 2;  isr_noerr 3;  isr_noerr 4;  isr_noerr 5
    isr_noerr 6;  isr_noerr 7;  isr_err 8;    isr_noerr 9;  isr_err 10;   isr_err 11
    isr_err 12;   isr_err 13;   isr_err 14;   isr_noerr 15; isr_noerr 16; isr_err 17
    isr_noerr 18; isr_noerr 19; isr_noerr 20; isr_err 21;   isr_noerr 22; isr_noerr 23
    isr_noerr 24; isr_noerr 25; isr_noerr 26; isr_noerr 27; isr_noerr 28; isr_err 29
    isr_err 30;   isr_noerr 31

isr_common:                 /* frame: r15..rax, vector, error, rip, cs, rflags, rsp, ss */
    push %rax; push %rbx; push %rcx; push %rdx; push %rsi; push %rdi; push %rbp
    push %r8;  push %r9;  push %r10; push %r11; push %r12; push %r13; push %r14; push %r15
    mov %rsp, %rdi
    mov %rsp, %rbx
    and $-16, %rsp
    call isr_dispatch       /* returns only for vectors it chooses to resume */
    mov %rbx, %rsp
    pop %r15; pop %r14; pop %r13; pop %r12; pop %r11; pop %r10; pop %r9; pop %r8
    pop %rbp; pop %rdi; pop %rsi; pop %rdx; pop %rcx; pop %rbx; pop %rax
    add $16, %rsp
    iretq

    .section .rodata
    .globl isr_stubs
    .align 8
isr_stubs:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad isr_\n
    .endr

/* JmpBuf: rbx, rbp, r12-r15, rsp, rip. */
    .text
    .globl fb_setjmp
fb_setjmp:
    mov %rbx, 0(%rdi)
    mov %rbp, 8(%rdi)
    mov %r12, 16(%rdi)
    mov %r13, 24(%rdi)
    mov %r14, 32(%rdi)
    mov %r15, 40(%rdi)
    lea 8(%rsp), %rdx
    mov %rdx, 48(%rdi)
    mov (%rsp), %rdx
    mov %rdx, 56(%rdi)
    xor %eax, %eax
    ret

    .globl fb_longjmp
fb_longjmp:
    mov 0(%rdi), %rbx
    mov 8(%rdi), %rbp
    mov 16(%rdi), %r12
    mov 24(%rdi), %r13
    mov 32(%rdi), %r14
    mov 40(%rdi), %r15
    mov 48(%rdi), %rsp
    mov %esi, %eax
    jmp *56(%rdi)

    .section .rodata
    .align 16
gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit ring-0 code */
    .quad 0x00cf92000000ffff    /* 0x10: flat data */
gdt_end:
    .align 8
gdt_ptr:                        /* lgdt reads 6 bytes in 32-bit mode and 10 in 64-bit mode */
    .word gdt_end - gdt - 1
    .quad gdt

    .section .bss
    .align 4096
boot_pml4: .skip 4096
boot_pdpt: .skip 4096
boot_pd:   .skip 4096
    .align 16
boot_stack: .skip 65536
boot_stack_top:

    .section .note.GNU-stack, "", @progbits
