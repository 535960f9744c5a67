"""The DICOM node: networking, the spool, study assembly, jobs and delivery."""
