"""docqa producer side: reading documents, windowing and submitting question jobs."""
