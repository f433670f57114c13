"""Pictures in and video out: start-image sizing and fitting, image files (incl. PNG strips), long video by sliding
windows (seams, colour matching), and MP4 reading and writing."""
