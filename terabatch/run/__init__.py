"""Running a job: memory accounting, progress, the summary, and the job driver."""
