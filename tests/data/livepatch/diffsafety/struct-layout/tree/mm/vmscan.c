struct reclaim_stat {
	unsigned nr_dirty;
	unsigned nr_unqueued_dirty;
	unsigned nr_congested;
	unsigned nr_writeback;
};

static unsigned int shrink_list(struct reclaim_stat *stat)
{
	return stat->nr_dirty;
}
