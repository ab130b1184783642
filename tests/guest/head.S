/* xenevt-test-guest: entry point, Xen ELF notes and the hypercall page.
 * Facts from xen/include/public/elfnote.h (note types) and xen/common/libelf
 * (how the PV loader reads them); the code is ours. */
#include "guest.h"

/* One Xen ELF note: name "Xen", type, descriptor. */
#define ELFNOTE(type, desctype, descdata)      \
	.balign 4;                             \
	.long 2f - 1f;  /* namesz */           \
	.long 4f - 3f;  /* descsz */           \
	.long type;                            \
1:	.asciz "Xen";                          \
2:	.balign 4;                             \
3:	desctype descdata;                     \
4:	.balign 4

	.section .note.Xen, "a", @note
	ELFNOTE(XEN_ELFNOTE_GUEST_OS,       .asciz, "xenevt-test-guest")
	ELFNOTE(XEN_ELFNOTE_GUEST_VERSION,  .asciz, "1")
	ELFNOTE(XEN_ELFNOTE_XEN_VERSION,    .asciz, "xen-3.0")
	ELFNOTE(XEN_ELFNOTE_LOADER,         .asciz, "generic")
	ELFNOTE(XEN_ELFNOTE_VIRT_BASE,      .quad, GUEST_VIRT_BASE)
	/* p_paddr == p_vaddr in our image: offset VIRT_BASE makes the loader's
	 * virtual start equal to the link address */
	ELFNOTE(XEN_ELFNOTE_PADDR_OFFSET,   .quad, GUEST_VIRT_BASE)
	ELFNOTE(XEN_ELFNOTE_ENTRY,          .quad, _start)
	ELFNOTE(XEN_ELFNOTE_HYPERCALL_PAGE, .quad, hypercall_page)

	.section .text.head, "ax", @progbits
	.code64
	.globl _start
_start:
	/* Xen: %rsi = start_info (virtual address); our own stack, then C */
	cld
	leaq stack_top(%rip), %rsp
	movq %rsi, %rdi
	call guest_main
	/* guest_main never returns; a privileged instruction would only crash us */
1:	jmp 1b

	/* filled in by the domain builder (XEN_DOMCTL_hypercall_init): entry N at +32*N */
	.balign 4096
	.globl hypercall_page
hypercall_page:
	.fill 4096, 1, 0xcc

	.section .bss.stack, "aw", @nobits
	.balign 4096
stack:
	.skip GUEST_STACK_SIZE
stack_top:
