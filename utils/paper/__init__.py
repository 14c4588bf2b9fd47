"""The paper's tables and figures rebuilt: its numbers as data, the runs behind a table, the
table written as Markdown, CSV and a chart, the learned gates."""
