#ifndef _LINUX_MM_INLINE_H
#define _LINUX_MM_INLINE_H

/* how many pages a folio spans */
static __always_inline long folio_nr(const struct folio *folio)
{
	return 1L << folio->order;
}

extern int other(void);
#endif
