"""Logic that runs inside the jobs: plain Python, testable without a JVM."""
