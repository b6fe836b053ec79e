"""Readers and writers: frames (folders, video files, DAVIS layouts), masks, overlays."""
