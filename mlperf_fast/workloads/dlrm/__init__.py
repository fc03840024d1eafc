"""DLRM: click-through prediction on Criteo 1TB (MLPerf Training v2.1 recommendation)."""
