/* xenevt-test-guest: constants shared by head.S and guest.c.
 * Numbers are Xen's public ABI (xen/include/public/). */
#ifndef XENEVT_GUEST_H
#define XENEVT_GUEST_H

/* where we link and ask Xen to map us: Linux's x86-64 PV base, so VA 0 stays unmapped */
#define GUEST_VIRT_BASE 0xffffffff80000000
#define GUEST_STACK_SIZE 16384

/* elfnote.h */
#define XEN_ELFNOTE_ENTRY          1
#define XEN_ELFNOTE_HYPERCALL_PAGE 2
#define XEN_ELFNOTE_VIRT_BASE      3
#define XEN_ELFNOTE_PADDR_OFFSET   4
#define XEN_ELFNOTE_XEN_VERSION    5
#define XEN_ELFNOTE_GUEST_OS       6
#define XEN_ELFNOTE_GUEST_VERSION  7
#define XEN_ELFNOTE_LOADER         8

#endif
