"""Stage: many photos at once on Ray Data: prediction (`predict`) and filling the feature cache (`embed`)."""
