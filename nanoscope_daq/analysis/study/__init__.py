"""Study-scale analysis (``nanoscope analyze``): every tomogram of a cohort on dask.distributed.

sources.py selects tomograms (by subject, cohort, treatment, day, plan); tasks.py is the
work of one tomogram (reconstruction, segmentation, morphometry) and of one interval of a
subject (registration and remodelling), each written atomically with its provenance;
batch.py runs them serially or on a dask cluster (cluster.py), skipping what is done;
cohort.py makes the table and the between-cohort comparison, plots.py its figures.
"""
