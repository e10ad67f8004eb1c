"""The study report: figures (matplotlib, Agg) and an HTML page with tables; knows no instrument or file format."""
