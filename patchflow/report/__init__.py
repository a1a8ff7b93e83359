"""Reports people read: HTML, Markdown and mail drafts from gate results."""
