// The id of the tab a canvas draws, for its nodes (they read their run state by tab).
import { createContext } from "react";

export const TabContext = createContext(null);
